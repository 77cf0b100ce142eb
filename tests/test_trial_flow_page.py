"""docs/how-a-trial-flows.md names exactly the files a trial of a study passes, found by running one."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import QUICK, ROOT

PAGE = ROOT / "docs" / "how-a-trial-flows.md"


def named_on_the_page() -> list[str]:
    """The files the page's numbered list names (between its `trial path` markers), in order."""
    text = PAGE.read_text()
    listed = text.split("<!-- trial path -->", 1)[1].split("<!-- /trial path -->", 1)[0]
    return re.findall(r"`((?:sweeplab|hydra_plugins|runners)/[\w/]+\.py)`", listed)


def test_the_page_names_each_file_of_the_trial_path_once_and_says_how_many():
    named = named_on_the_page()
    repeated = sorted({f for f in named if named.count(f) > 1})
    assert not repeated, f"named more than once: {repeated}"
    assert f"through {len(set(named))} files" in PAGE.read_text()
    for name in named:
        assert (ROOT / name).is_file() or (ROOT / "src" / name).is_file(), name


@pytest.mark.slow
def test_the_page_names_exactly_the_files_whose_functions_run_for_a_trial(tmp_path):
    out = tmp_path / "called.json"
    args = [
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=2",
        "hydra.sweeper.report=false",
        *QUICK,
    ]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "trace_trial.py"), str(out), "runners/train.py", *args],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    called, named = set(json.loads(out.read_text())), set(named_on_the_page())
    assert sorted(called - named) == [], "a trial passes these files; the page does not name them"
    assert sorted(named - called) == [], "the page names these files; no function of theirs ran"
