"""runners/predict.py: members, inputs, TTA and ensembles; bad input is one line before any model loads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from omegaconf import OmegaConf
from optuna.trial import TrialState, create_trial
from PIL import Image
from sklearn.datasets import load_digits

from sweeplab.errors import SweeplabError
from sweeplab.predict.ensemble import MeanProbs, Vote, WeightedProbs
from sweeplab.predict.members import Member
from sweeplab.predict.runner import predict
from sweeplab.predict.tta import TTA, View
from tests.conftest import QUICK, run_cli

DIGITS = [str(i) for i in range(10)]


def _predict_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sweeplab.predict.conf", version_base="1.3"):
        cfg = compose(config_name="predict", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


def _fake_run(compose_cfg, where: Path, overrides=(), classes=DIGITS, value=0.9) -> Path:
    """A run dir as runners/train.py leaves it, whose checkpoint is not a checkpoint: a check that lets
    it through fails on loading it, so a test that expects another error shows the check came first."""
    cfg = compose_cfg(list(overrides))
    where.mkdir(parents=True)
    (where / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    checkpoint = where / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"not a checkpoint")
    metrics = {"classes": list(classes), "best_checkpoint": str(checkpoint), "value": value}
    (where / "metrics.json").write_text(json.dumps(metrics))
    return where


def _refused(tmp_path, monkeypatch, overrides: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweeplabError) as info:
        predict(_predict_cfg(overrides))
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "outputs" / "predict").exists()


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"overrides": ["data.img_size=64"]}, "members disagree on data.img_size: "),
        (
            {"overrides": ["data.in_chans=3", "data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]"]},
            "on data.in_chans",
        ),
        ({"classes": ["cat", "dog"]}, "members disagree on classes: "),
    ],
)
def test_members_that_disagree_are_refused_before_any_model_is_loaded(
    tmp_path, monkeypatch, compose_cfg, second, message
):
    _fake_run(compose_cfg, tmp_path / "outputs" / "a" / "1")
    _fake_run(compose_cfg, tmp_path / "outputs" / "b" / "1", **second)
    _refused(tmp_path, monkeypatch, ["runs=[outputs/a/1,outputs/b/1]"], message)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "runs=[]: give the trained runs (runs=[outputs/<exp_name>/latest])"),
        (["runs=[outputs/nope]"], "runs[0]='outputs/nope': no such run dir"),
        (["runs=[outputs/a/1,outputs/a/1]"], "member a/1 is given twice"),
        (
            ["runs=[outputs/a/1]", "ensemble=vote", "ensemble.min_agree=2"],
            "ensemble.min_agree=2: must lie between 1 and the number of members (1)",
        ),
        (["runs=[outputs/a/1]", "input=folder"], "input.dir is not set"),
        (["runs=[outputs/a/1]", "input=folder", "input.dir=nowhere"], "input.dir='nowhere': no such folder"),
        (["runs=[outputs/a/1]", "input=submission"], "input.root is not set"),
        (
            ["runs=[outputs/a/1]", "input=submission", "input.root=comp"],
            "input.image_dir='test': no such folder in",
        ),
        (["runs=[outputs/a/1]", "batch_size=0"], "batch_size=0: must be an integer >= 1"),
        (["runs=[outputs/a/1]", "tta.views=[]"], "tta.views=[]: must list at least one view"),
        (["runs=[outputs/a/1]", "tta.views=[{zoom: 2}]"], "tta.views[0]"),
        (["runs=[outputs/a/1]", "device=tpu"], "device='tpu'"),
        (["study_name=gone"], "study_name='gone': no study file studies/gone.db"),
    ],
)
def test_bad_input_is_one_line_before_any_model_is_loaded(
    tmp_path, monkeypatch, compose_cfg, overrides, message
):
    _fake_run(compose_cfg, tmp_path / "outputs" / "a" / "1")
    (tmp_path / "comp").mkdir()
    (tmp_path / "comp" / "sample_submission.csv").write_text("ID,target\nx,0\n")
    _refused(tmp_path, monkeypatch, overrides, message)


def test_ids_of_the_sample_submission_without_an_image_are_refused(tmp_path, monkeypatch, compose_cfg):
    _fake_run(compose_cfg, tmp_path / "outputs" / "a" / "1")
    (tmp_path / "comp" / "test").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "comp" / "test" / "a.png")
    (tmp_path / "comp" / "sample_submission.csv").write_text("ID,target\na,0\nb.png,0\nc,0\n")
    _refused(
        tmp_path,
        monkeypatch,
        ["runs=[outputs/a/1]", "input=submission", "input.root=comp"],
        "2 id(s) of sample_submission.csv have no image, first: ",
    )
    _refused(
        tmp_path,
        monkeypatch,
        ["runs=[outputs/a/1]", "input=submission", "input.root=comp", "input.id_column=id"],
        "input.id_column='id': not a column of sample_submission.csv; its columns are ID, target",
    )


def test_a_study_without_complete_trials_is_refused(tmp_path, monkeypatch):
    (tmp_path / "studies").mkdir()
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'studies' / 's.db'}")
    dist = optuna.distributions.FloatDistribution(0, 1)
    study.add_trial(
        create_trial(state=TrialState.PRUNED, params={"x": 0.5}, distributions={"x": dist}, value=1.0)
    )
    _refused(
        tmp_path,
        monkeypatch,
        ["study_name=s"],
        "study_name='s': no complete trial to predict with (1 pruned)",
    )


def test_a_weighted_ensemble_needs_every_members_validation_score(tmp_path, monkeypatch, compose_cfg):
    _fake_run(compose_cfg, tmp_path / "outputs" / "a" / "1")
    _fake_run(compose_cfg, tmp_path / "outputs" / "a" / "2", value=None)
    _refused(
        tmp_path,
        monkeypatch,
        ["runs=[outputs/a/1,outputs/a/2]", "ensemble=weighted"],
        "needs a validation score > 0 for every member; a/2 has None",
    )


def _members(n: int, scores=None, mode="max") -> list[Member]:
    config = OmegaConf.create({"optimized_metric": "val/f1", "optimized_mode": mode, "data": {}})
    return [
        Member(f"m{i}", Path("."), Path("x"), config, ("a", "b", "c"), (scores or [1.0] * n)[i])
        for i in range(n)
    ]


def test_the_vote_needs_min_agree_and_breaks_ties_by_the_mean_probability():
    p = torch.tensor(
        [
            [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.5, 0.3]],  # member 0 votes a, a, b
            [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]],  # member 1 votes a, b, c
            [[0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]],  # member 2 votes b, c, c
        ]
    )
    members = _members(3)
    voted = Vote(min_agree=2).combine(p, members)
    # image 0: a 2 votes; image 1: a, b, c one each, the tie goes to b (mean 0.5); image 2: c 2 votes
    assert voted.labels.tolist() == [0, 1, 2] and voted.notes["below_min_agree"] == 1
    assert torch.allclose(voted.probs.sum(1), torch.ones(3))
    unanimous = Vote(min_agree=3).combine(p, members)
    assert (
        unanimous.labels.tolist() == p.mean(0).argmax(1).tolist() and unanimous.notes["below_min_agree"] == 3
    )
    with pytest.raises(
        SweeplabError, match=r"ensemble.min_agree=4: must lie between 1 and the number of members \(3\)"
    ):
        Vote(min_agree=4).check(members)
    assert Vote().needed(_members(5)) == 3  # null: a majority


def test_weights_follow_the_validation_score_and_its_direction():
    assert WeightedProbs().weights(_members(2, [0.9, 0.6])) == pytest.approx([0.6, 0.4])
    assert WeightedProbs().weights(_members(2, [0.2, 0.6], mode="min")) == pytest.approx([0.75, 0.25])
    p = torch.tensor([[[0.9, 0.1, 0.0]], [[0.2, 0.8, 0.0]]])
    assert MeanProbs().combine(p, _members(2)).probs.tolist() == [pytest.approx([0.55, 0.45, 0.0])]


def test_tta_views_flip_and_crop_on_the_device_and_the_identity_is_exact():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) / 31
    assert torch.equal(View()(x), x)
    assert torch.equal(View(hflip=True)(x), x.flip(3))
    assert torch.allclose(View(scale=1.0, dx=0.0)(x), x)
    centre = torch.zeros(1, 1, 8, 8)
    centre[..., 2:6, 2:6] = 1.0
    zoomed = View(scale=2.0)(centre)  # the centre 4x4, resized back to 8x8: all of it from the centre
    assert zoomed.shape == centre.shape and torch.allclose(zoomed[..., 1:7, 1:7], torch.ones(6, 6))
    assert zoomed.min() >= 0.5 and View(scale=0.5)(centre)[..., 0, 0].item() == 0.0  # zoomed out: padded
    tta = TTA([{}, {"hflip": True}, {"scale": 1.1}])
    assert len(tta) == 3 and tta.plain_index == 0 and tta.describe() == ["as is", "hflip", "zoom 1.1"]
    assert TTA([{"hflip": True}]).plain_index is None


# ---- whole runs through the CLI ------------------------------------------------------------------


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_3_fold_run_predicted_on_its_held_out_split_ensembles_its_folds(tmp_path):
    trained = run_cli(
        ["data.folds=3", "trainer.max_epochs=3", "trainer.accelerator=cpu", "callbacks.progress=null"],
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = (tmp_path / "outputs" / "digits_test_resnet" / "latest").resolve()
    folds = json.loads((run / "metrics.json").read_text())["folds"]

    result = run_cli(
        ["runs=[outputs/digits_test_resnet/latest]", "tta=hflip"], cwd=tmp_path, script="runners/predict.py"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = (tmp_path / "outputs" / "predict" / "latest").resolve()
    metrics = json.loads((out / "metrics.json").read_text())
    members, ensemble = metrics["members"], metrics["ensemble"]
    assert [m["name"] for m in members] == [f"digits_test_resnet/{run.name}/fold_{i}" for i in range(3)]
    for m, fold in zip(members, folds, strict=True):  # without TTA, each member scores as it was tested
        assert m["f1_no_tta"] == pytest.approx(fold["test"]["test/f1"], abs=1e-6)
        assert m["acc_no_tta"] == pytest.approx(fold["test"]["test/acc"], abs=1e-6)
        assert m["val_score"] == pytest.approx(fold["value"]) and m["images_per_s"] > 0
    # the gain of ensembling, on this data
    assert ensemble["f1_no_tta"] >= np.mean([m["f1_no_tta"] for m in members])
    assert ensemble["f1"] >= metrics["mean_member"]["f1"]
    assert metrics["images"] == 270 and metrics["images_per_s"] > 0
    console = result.stdout + result.stderr
    assert "mean of members" in console and "ensemble (mean)" in console

    rows = _read(out / "submission.csv")
    assert (
        len(rows) == 270 and set(rows[0]) == {"ID", "target"} and {r["target"] for r in rows} <= set(DIGITS)
    )
    for name in [*(m["probs"] for m in members), ensemble["probs"]]:
        probs = np.array([[float(r[c]) for c in DIGITS] for r in _read(out / name)])
        assert probs.shape == (270, 10) and np.allclose(probs.sum(1), 1.0, atol=1e-4)

    voted = run_cli(
        ["runs=[outputs/digits_test_resnet/latest]", "ensemble=vote", "ensemble.min_agree=2"],
        cwd=tmp_path,
        script="runners/predict.py",
    )
    assert voted.returncode == 0, voted.stderr[-3000:]
    vote = json.loads((tmp_path / "outputs" / "predict" / "latest" / "metrics.json").read_text())["ensemble"]
    assert vote["rule"] == "vote" and vote["min_agree"] == 2 and "f1" in vote

    refused = run_cli(
        ["runs=[outputs/digits_test_resnet/latest]", "ensemble=vote", "ensemble.min_agree=4"],
        cwd=tmp_path,
        script="runners/predict.py",
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "ensemble.min_agree=4: must lie between 1 and the number of members (3)" in refused.stderr


def _competition(root: Path, n_train: int = 300, n_test: int = 40) -> list[str]:
    """The competition layout from the digits: train.csv + train/, sample_submission.csv + test/."""
    digits = load_digits()
    images = (digits.images / 16 * 255).astype(np.uint8)
    for folder in ("train", "test"):
        (root / folder).mkdir(parents=True)
    with (root / "train.csv").open("w") as f:
        f.write("ID,target\n")
        for i in range(n_train):
            Image.fromarray(images[i]).save(root / "train" / f"tr_{i}.png")
            f.write(f"tr_{i}.png,{digits.target[i]}\n")
    ids = [f"te_{i}" for i in range(n_test)]
    for i, image_id in enumerate(ids):
        Image.fromarray(images[n_train + i]).save(root / "test" / f"{image_id}.png")
    order = list(np.random.default_rng(0).permutation(ids))
    with (root / "sample_submission.csv").open("w") as f:
        f.write("ID,target,note\n")
        for k, image_id in enumerate(order):  # ids without extension, in an order of their own
            f.write(f"{image_id},0,row{k}\n")
    return order


@pytest.mark.slow
def test_the_competition_layout_gets_a_submission_in_the_sample_s_order_and_format(tmp_path):
    order = _competition(tmp_path / "comp")
    trained = run_cli(
        [
            "data=image_folder",
            "data.root=comp",
            "data.img_size=32",
            "data.in_chans=1",
            "data.mean=[0.5]",
            "data.std=[0.5]",
            "data.augment.hflip=0",
            "trainer.max_epochs=1",
            *QUICK,
        ],
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = run_cli(
        [
            "runs=[outputs/image_folder_test_resnet/latest]",
            "input=submission",
            "input.root=comp",
            "tta=scales",
        ],
        cwd=tmp_path,
        script="runners/predict.py",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "outputs" / "predict" / "latest"
    rows = _read(out / "submission.csv")
    assert [r["ID"] for r in rows] == order
    assert list(rows[0]) == ["ID", "target", "note"] and [r["note"] for r in rows] == [
        f"row{k}" for k in range(40)
    ]
    assert {r["target"] for r in rows} <= set(DIGITS)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labelled"] is False and "f1" not in metrics["ensemble"]
    assert metrics["tta"] == ["as is", "zoom 1.1", "zoom 0.9"]
