"""The head-to-head benchmark against Ray Tune, Optuna by hand, the stock hydra-optuna-sweeper and Syne Tune
(where `.ci/run` put them, in benchmarks/runs/stock-pkgs and syne-pkgs), small enough to run in the tests, so
the script cannot rot (its figures are taken with `python benchmarks/peers.py`, BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
RUNS = ROOT / "benchmarks" / "runs"
STOCK = (RUNS / "stock-pkgs" / "hydra_plugins" / "hydra_optuna_sweeper").is_dir()
SYNE = (RUNS / "syne-pkgs" / "syne_tune" / "optimizer" / "schedulers" / "hyperband_promotion.py").is_file()


def test_the_peers_benchmark_runs_each_system_on_the_same_problem_and_writes_its_table_and_plot(tmp_path):
    pytest.importorskip("ray.tune", reason="pip install -e '.[peers]'")
    result = subprocess.run(
        [
            sys.executable,
            "peers.py",
            *("--problems", "digits", "--seeds", "1", "--trials", "2", "--epochs", "2", "--warmup", "1"),
            "--quick",
            *("--out", str(tmp_path)),
        ],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    expected = sorted(
        ["optuna", "ray", "sweeplab", *(["stock"] if STOCK else []), *(["syne"] if SYNE else [])]
    )
    assert sorted(r["system"] for r in runs) == expected
    for run in runs:
        # 2 trials of at most 2 epochs; Ray's ASHA may stop the second, Syne Tune's may leave both paused at
        # the first rung (it promotes none once its 2 configurations have started)
        assert 2 <= run["epochs"] <= 4 and len(run["done"]) <= 2
        assert len(run["done"]) >= (0 if run["system"] == "syne" else 1)
        if run["done"]:
            assert 0.0 <= run["best"] <= 1.0 and run["anytime"]["1.0"] == run["best"]
    assert all(f"| {system} |" in result.stdout for system in expected)
    assert (tmp_path / "peers_digits.png").stat().st_size > 0
    # where the time went, read back from what each system stored, in the wall and the epochs it reported
    rows = json.loads((tmp_path / "breakdown.json").read_text())["digits"]
    assert sorted(r["system"] for r in rows) == expected
    epochs = {r["system"]: r["epochs"] for r in runs}
    for row in rows:
        assert row["epochs"] == epochs[row["system"]] and row["equal_epochs"] == min(epochs.values())
        assert 0 < row["busy"] <= 2 * row["wall"] and row["outside"] < row["wall"]
    assert "| best at equal epochs (E) |" in result.stdout


def test_seeds_run_in_separate_calls_end_in_one_table_and_a_different_budget_is_refused(
    tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import argparse

    from peers import earlier_runs

    def call(**kw):
        base = dict(trials=20, epochs=8, quick=False, sweeplab_set=[], rescue_top_k=None)
        base.update(systems=["sweeplab", "ray"], problems=["hard3k"])
        return argparse.Namespace(**{**base, **kw})

    first = call()
    path = tmp_path / "results.json"
    runs = [{"system": s, "problem": "hard3k", "seed": seed} for s in ("sweeplab", "ray") for seed in (0, 1)]
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(first).items()}, "runs": runs}))

    kept = earlier_runs(path, call(systems=["sweeplab"]), range(1, 2))  # sweeplab's seed 1 runs again
    assert sorted((r["system"], r["seed"]) for r in kept) == [("ray", 0), ("ray", 1), ("sweeplab", 0)]
    assert earlier_runs(tmp_path / "none.json", first, range(1)) == []
    with pytest.raises(SystemExit, match=r"--sweeplab-set=\['x=1'\]: .* holds runs made with \[\]"):
        earlier_runs(path, call(sweeplab_set=["x=1"]), range(2, 3))
