"""`python -m sweeplab.launching.ranks <job dir>`: an extra DDP rank of a trial (`ranks.join`)."""

import sys

from sweeplab.errors import SweeplabError
from sweeplab.launching.ranks import join

if __name__ == "__main__":
    try:
        join(sys.argv[1:])
    except SweeplabError as exc:
        sys.exit(f"sweeplab: {exc}")
