"""k-fold: stratified folds around one test split, one model per fold, the mean as the value, pruning per fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState

from sweeplab.data import DigitsSource, ImageDataModule
from sweeplab.errors import SweeplabError
from sweeplab.search.records import ATTR_FOLD_VALUES
from sweeplab.training import train
from tests.conftest import QUICK, fast, sweep


def _dm(**kwargs) -> ImageDataModule:
    dm = ImageDataModule(DigitsSource(), img_size=8, **kwargs)
    dm.load()
    return dm


def test_folds_are_disjoint_stratified_val_splits_around_the_same_test_split():
    whole = _dm(folds=None)
    folds = [_dm(folds=4, fold=i) for i in range(4)]
    labels = whole.data.labels.numpy()
    rest = np.setdiff1d(np.arange(len(labels)), whole.splits["test"])
    vals = [dm.splits["val"] for dm in folds]
    for dm in folds:
        assert np.array_equal(dm.splits["test"], whole.splits["test"])  # one test split for every fold
        assert np.array_equal(np.sort(np.concatenate([dm.splits["train"], dm.splits["val"]])), rest)
    assert np.array_equal(np.sort(np.concatenate(vals)), rest)  # every image validates exactly once
    per_class = np.array([np.bincount(labels[v], minlength=10) for v in vals])
    assert (per_class.max(axis=0) - per_class.min(axis=0) <= 1).all()  # stratified


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 1}, "data.folds=1: must be an integer >= 2"),
        ({"folds": "3"}, "data.folds='3': must be an integer >= 2"),
        ({"folds": 3, "fold": 3}, "data.fold=3: must be an integer in [0, 2]"),
        ({"folds": 200}, "data.folds=200: class '"),
    ],
)
def test_bad_fold_settings_name_the_key(kwargs, message):
    with pytest.raises(SweeplabError) as err:
        _dm(**kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_bad_fold_count_stops_a_run_before_it_writes_anything(compose_cfg, tmp_path):
    with pytest.raises(SweeplabError, match=r"^data.folds=1: must be an integer >= 2"):
        train(compose_cfg(fast("data.folds=1")))
    assert not (tmp_path / "run").exists()


def test_a_k_fold_run_trains_one_model_per_fold_and_returns_their_mean(compose_cfg, tmp_path):
    cfg = compose_cfg(fast("data.folds=3", "trainer.max_epochs=2"))
    value = train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    folds = metrics["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2] and all(f["epochs_run"] == 2 for f in folds)
    assert value == pytest.approx(np.mean([f["value"] for f in folds])) == pytest.approx(metrics["value"])
    assert metrics["test"]["test/f1"] == pytest.approx(np.mean([f["test"]["test/f1"] for f in folds]))
    for i, fold in enumerate(folds):  # each fold keeps its own checkpoint
        assert Path(fold["best_checkpoint"]).parent == tmp_path / "run" / f"fold_{i}" / "checkpoints"
        assert Path(fold["best_checkpoint"]).is_file()


def _kfold_study(tmp_path: Path, name: str, *extra: str) -> list:
    return sweep(
        [
            "-m",
            "hparams_search=optuna_fast",
            f"exp_name={name}",
            "hydra.sweeper.quick_validation.epochs=2",
            "hydra.sweeper.quick_validation.folds=3",
            *extra,
            *QUICK,
        ],
        tmp_path,
        study=f"{name}_fast",
    ).trials


@pytest.mark.slow
def test_a_k_fold_trial_value_is_the_mean_of_its_stored_fold_values(tmp_path):
    trials = _kfold_study(tmp_path, "kfold", "hydra.sweeper.n_trials=3", "hydra/sweeper/pruner=none")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        folds = t.user_attrs[ATTR_FOLD_VALUES]
        assert len(folds) == 3 and t.value == pytest.approx(np.mean(folds))
        # fold f reports epoch e at step 2f + e: each fold's value is the best of its own two steps
        assert sorted(t.intermediate_values) == [1, 2, 3, 4, 5, 6]
        for f, fold_value in enumerate(folds):
            iv = t.intermediate_values
            assert fold_value == pytest.approx(max(iv[2 * f + 1], iv[2 * f + 2]))
        assert t.user_attrs["epochs_run"] == t.user_attrs["max_epochs"] == 6
        assert "data.folds=3" in t.user_attrs["quick_overrides"]


@pytest.mark.slow
def test_a_hopeless_k_fold_trial_is_pruned_in_its_first_fold(tmp_path):
    trials = _kfold_study(
        tmp_path,
        "kprune",
        "hydra.sweeper.n_trials=2",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.1",  # no F1 reaches it: prune at the first report
    )
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for t in trials:
        assert list(t.intermediate_values) == [1] and t.user_attrs["epochs_run"] == 1
        metrics = json.loads((Path(t.user_attrs["output_dir"]) / "metrics.json").read_text())
        assert len(metrics["folds"]) == 1 and metrics["pruned_at_epoch"] == 1 and metrics["test"] == {}
