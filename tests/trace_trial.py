"""Run an entry point of this checkout with a profile hook and write the library files whose functions ran.

    python tests/trace_trial.py OUT.json runners/train.py -m hparams_search=optuna ...

For `test_layout.py`'s check of docs/how-a-trial-flows.md: a file counts when one of its functions is
called (module and class bodies, which run on import, do not count). Files are named as the page names
them: `runners/...` from the checkout, `sweeplab/...` and `hydra_plugins/...` from where they are imported.
"""

from __future__ import annotations

import importlib
import json
import runpy
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

CO_OPTIMIZED = 0x1  # a function's code (a module's or a class body's has it unset)
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    out, script, *args = sys.argv[1:]
    called: set[str] = set()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_flags & CO_OPTIMIZED:
            called.add(frame.f_code.co_filename)

    sys.argv = [str(ROOT / script), *args]
    sys.setprofile(hook)
    threading.setprofile(hook)
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        face = importlib.import_module("hydra_plugins.sweeplab_sweeper.sweeplab_sweeper")
        library = importlib.import_module("sweeplab")
        roots = {
            Path(str(library.__file__)).resolve().parent: "sweeplab",
            Path(str(face.__file__)).resolve().parent: "hydra_plugins/sweeplab_sweeper",
            ROOT / "runners": "runners",
        }
        named = set()
        for name in called:
            path = Path(name).resolve()
            for root, shown in roots.items():
                if path.is_relative_to(root):
                    named.add(f"{shown}/{path.relative_to(root).as_posix()}")
        Path(out).write_text(json.dumps(sorted(named), indent=1))
    sys.exit(code)


if __name__ == "__main__":
    main()
