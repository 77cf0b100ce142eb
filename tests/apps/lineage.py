"""A Hydra app that writes down the process it runs in: its pid, its parent, and what that parent is.

Swept with several workers, it shows where each trial's process came from and which trial its launcher
handed it (`tests/test_any_app.py`).
"""

import json
import os
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sweeplab.launching.handover import handed


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@hydra.main(version_base=None, config_path="conf", config_name="sphere")
def lineage(cfg: DictConfig) -> float:
    parent = os.getppid()
    given = handed()
    record = {
        "handed": given.address.number if given is not None and given.address is not None else None,
        "pid": os.getpid(),
        "parent": parent,
        "parent_cmdline": Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\0", b" ").decode(),
        "parent_threads": int(_status(parent)["Threads"].strip()),
        "grandparent": int(_status(parent)["PPid"].strip()),
        "threads_at_start": threading.active_count(),
        "cwd": os.getcwd(),
    }
    Path(HydraConfig.get().runtime.output_dir, "lineage.json").write_text(json.dumps(record))
    return (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2


if __name__ == "__main__":
    lineage()
