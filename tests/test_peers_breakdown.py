"""`peers_breakdown.py --sweeplab`: a preset measured alone is put beside the peers of an earlier call, and
only where both ran the same budget on the same problems and seeds (BENCHMARKS.md, "The preset's pruner from
2 finished trials")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.append(str(ROOT / "benchmarks"))  # after the installed packages: its script names shadow none
from peers_breakdown import beside  # noqa: E402

ARGS = {"trials": "20", "epochs": "8", "quick": "False"}


def _run(system: str, problem: str, seed: int, best: float) -> dict:
    return {"system": system, "problem": problem, "seed": seed, "best": best}


def _results(runs: list[dict], **args: str) -> dict:
    return {"machine": "m", "args": {**ARGS, **args}, "runs": runs}


def test_a_candidates_sweeplab_runs_take_the_place_of_the_peers_own():
    peers = _results([_run(s, "hard3k", seed, 0.5) for seed in (0, 1) for s in ("sweeplab", "ray", "syne")])
    other = _results([_run("sweeplab", "hard3k", seed, 0.9) for seed in (0, 1, 2)])
    joined = beside(peers, other, Path("cand"))
    assert sorted((r["system"], r["seed"], r["best"]) for r in joined["runs"]) == [
        ("ray", 0, 0.5),
        ("ray", 1, 0.5),
        ("sweeplab", 0, 0.9),  # the candidate's, and only the seeds the peers ran
        ("sweeplab", 1, 0.9),
        ("syne", 0, 0.5),
        ("syne", 1, 0.5),
    ]
    assert joined["args"] == peers["args"]


@pytest.mark.parametrize(
    ("other_runs", "other_args", "said"),
    [
        ([_run("sweeplab", "hard3k", 0, 0.9)], {"epochs": "12"}, "epochs='12', this run's is '8'"),
        ([_run("sweeplab", "hard3k", 0, 0.9)], {}, "no sweeplab run of [('hard3k', 1)]; it holds 1 runs"),
        (
            [_run("ray", "hard3k", s, 0.9) for s in (0, 1)],
            {},
            "no sweeplab run of [('hard3k', 0), ('hard3k', 1)]",
        ),
    ],
)
def test_a_candidate_of_another_budget_or_missing_a_seed_is_refused_with_one_line(
    other_runs, other_args, said
):
    peers = _results([_run(s, "hard3k", seed, 0.5) for seed in (0, 1) for s in ("sweeplab", "ray")])
    with pytest.raises(SystemExit) as refused:
        beside(peers, _results(other_runs, **other_args), Path("cand"))
    assert said in str(refused.value)
    assert str(refused.value).startswith("--sweeplab cand: ")
