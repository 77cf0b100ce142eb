"""What a user meets on the everyday path: where a run's files went, and a study's preset used from elsewhere."""

from __future__ import annotations

import re

import pytest

from tests.conftest import QUICK, fast, run_cli, sweep

pytestmark = pytest.mark.slow


def test_a_run_says_where_its_outputs_went_and_they_are_there(tmp_path):
    result = run_cli(fast(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    said = re.search(r"; outputs in (\S+)$", result.stdout + result.stderr, re.MULTILINE)
    assert said is not None
    assert (tmp_path / said.group(1) / "metrics.json").is_file()


def test_a_studys_preset_used_from_another_directory_says_where_it_is_and_the_way_given_works(tmp_path):
    here, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    args = ["-m", "hparams_search=optuna_fast", "exp_name=away", "hydra.sweeper.n_trials=1", *QUICK]
    sweep([*args, "hydra.sweeper.quick_validation.epochs=1"], here)
    preset = "preset=optimized/away_fast"
    refused = run_cli([preset, *fast()], cwd=elsewhere)
    assert refused.returncode == 1
    (line,) = [x for x in refused.stderr.splitlines() if x.strip()]
    assert line.startswith(f"{preset}: no preset/optimized/away_fast.yaml in {elsewhere}/studies/conf; ")
    assert "hydra.searchpath=[file://<that directory>/studies/conf]" in line
    # the preset holds the study's trial config, its batch limits (QUICK) included
    pointed = run_cli(
        [
            preset,
            f"hydra.searchpath=[file://{here}/studies/conf]",
            "trainer.max_epochs=1",
            "callbacks.progress=null",
        ],
        cwd=elsewhere,
    )
    assert pointed.returncode == 0, pointed.stderr[-2000:]
