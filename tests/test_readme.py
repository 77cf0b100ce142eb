"""The README's commands name tools its set-up installs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_every_venv_tool_the_readme_names_is_installed_by_its_set_up_and_runs():
    tools = sorted(set(re.findall(r"\.venv/bin/([A-Za-z0-9_.-]+)", (ROOT / "README.md").read_text())))
    assert "optuna-dashboard" in tools
    bin_dir = Path(sys.executable).parent  # the tests run in the README's venv
    for tool in tools:
        assert (bin_dir / tool).is_file(), (
            f"the README names .venv/bin/{tool}; the set-up does not install it"
        )
    result = subprocess.run([str(bin_dir / "optuna-dashboard"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "storage" in result.stdout.lower()
