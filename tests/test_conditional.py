"""Conditional search spaces: a family's params only on its own trials; the stock Python hook still works."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from sweeplab.errors import SweeplabError
from sweeplab.search.plan import make_plan
from sweeplab.search.space import SearchSpace, key_of
from tests.conftest import CONF, QUICK, ROOT, sweep

FAMILIES = {
    "model": {
        "test_resnet": {"data.img_size": 32},
        "test_convnext": {
            "models.net.drop_path_rate": "interval(0.0, 0.3)",
            "models.net.ls_init_value": "tag(log, interval(1e-6, 1e-4))",
            "data.img_size": "choice(32, 48)",
        },
        "test_efficientnet": {
            "models.net.drop_rate": "interval(0.1, 0.4)",
            "data.img_size": "choice(32, 40)",
        },
    }
}
PARAMS = {
    "model": "choice(test_resnet, test_convnext, test_efficientnet)",
    "models.optimizer.lr": "interval(0.01, 0.1)",
}


def _family(name: str) -> str | None:
    return name.split("|model=", 1)[1] if "|model=" in name else None


def test_each_trial_gets_only_its_own_familys_params():
    space = SearchSpace.parse(PARAMS, conditional=FAMILIES)
    assert space.all_distributions()["data.img_size|model=test_convnext"] == CategoricalDistribution([32, 48])
    assert space.all_distributions()["models.net.drop_rate|model=test_efficientnet"] == FloatDistribution(
        0.1, 0.4
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen = set()
    for _ in range(40):
        trial = study.ask(space.distributions)
        space.suggest(trial)
        model = trial.params["model"]
        seen.add(model)
        own = {n for n in trial.params if _family(n) is not None}
        assert all(_family(n) == model for n in own)  # never a param of another family
        expected = {k for k in FAMILIES["model"][model] if k != "data.img_size" or model != "test_resnet"}
        assert {key_of(n) for n in own} == expected
        overrides = space.overrides(trial.params)
        img = [o for o in overrides if o.startswith("data.img_size=")]
        assert len(img) == 1  # the branch's own image size: sampled, or fixed for resnet
        if model == "test_resnet":
            assert img == ["data.img_size=32"]
        study.tell(trial, 0.5)
    assert seen == set(FAMILIES["model"])


def test_a_later_parent_may_be_an_earlier_branchs_key():
    space = SearchSpace.parse(
        {"model": "choice(a, b)"},
        conditional={
            "model": {"a": {"optimizer": "choice(sgd, adamw)"}},
            "optimizer": {"sgd": {"m": "interval(0.8, 0.99)"}},
        },
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask(space.distributions)
        space.suggest(trial)
        has_m = "m|optimizer=sgd" in trial.params
        assert has_m == (trial.params["model"] == "a" and trial.params["optimizer|model=a"] == "sgd")
        study.tell(trial, 0.0)


def test_a_fixed_parent_takes_its_branch_on_every_trial():
    space = SearchSpace.parse(
        {"models.optimizer.lr": "interval(0.01, 0.1)"}, ["model=test_convnext"], FAMILIES
    )
    trial = optuna.create_study().ask(space.distributions)
    space.suggest(trial)
    assert {_family(n) for n in trial.params} == {None, "test_convnext"}


def test_qualified_names_in_params_are_the_same_space_as_the_nested_block():
    flat = {**PARAMS}
    for parent, branches in FAMILIES.items():
        for when, body in branches.items():
            flat.update({f"{key}|{parent}={when}": value for key, value in body.items()})
    parsed = SearchSpace.parse(flat)
    assert parsed.to_json() == SearchSpace.parse(PARAMS, conditional=FAMILIES).to_json()
    assert parsed.conditional["model"]["test_resnet"].fixed == {"data.img_size": "32"}


def _group_options(name: str) -> list[str] | None:
    folder = CONF / name.replace(".", "/")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else None


@pytest.fixture
def plan_with(compose_cfg, tmp_path):
    """make_plan for hparams_search=optuna_fast with a conditional block, checked as the sweeper checks it."""

    def _plan(conditional, params=PARAMS, overrides=()):
        cfg = compose_cfg(["hparams_search=optuna_fast", *overrides], keep_hydra=True)
        sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
        sweeper.update(params=params, conditional=conditional)

        def compose(extra):
            return compose_cfg(["hparams_search=optuna_fast", *overrides, *extra], keep_hydra=True)

        plan = make_plan(
            OmegaConf.create(sweeper), cfg, [], _group_options, root_dir=str(tmp_path), compose=compose
        )
        assert not (tmp_path / "studies").exists()
        return plan

    return _plan


def test_a_branch_key_is_checked_in_the_config_of_its_own_choice(plan_with):
    plan = plan_with(FAMILIES)  # ls_init_value exists for test_convnext only, not for the default test_resnet
    assert plan.space.defaults == {"model": "test_resnet"}
    assert "models.net.ls_init_value|model=test_convnext" in plan.space.to_json()


@pytest.mark.parametrize(
    ("conditional", "params", "overrides", "message"),
    [
        (
            {"model": {"test_convnextt": {"models.net.drop_rate": "interval(0.1, 0.2)"}}},
            PARAMS,
            (),
            r"^hydra.sweeper.conditional.model='test_convnextt': a branch for a value model never takes here; "
            r"it takes: test_resnet, test_convnext, test_efficientnet$",
        ),
        (
            {"model": {"test_resnet": {"models.net.ls_init_value": "interval(1e-6, 1e-4)"}}},
            PARAMS,
            (),
            r"^hydra.sweeper.conditional.model.test_resnet: 'models.net.ls_init_value' is not a key",
        ),
        (
            {"model": {"test_convnext": {"models.optimizer.lr": "interval(0.1, 0.2)"}}},
            PARAMS,
            (),
            r"hydra.sweeper.conditional.model.test_convnext.models.optimizer.lr=.*also searched for every trial",
        ),
        (
            {"model": {"test_convnext": {"models.net.drop_path_rate": "interval(0.3, 0.1)"}}},
            PARAMS,
            (),
            r"an empty or inverted range",
        ),
        ({"model": ["test_convnext"]}, PARAMS, (), r"^hydra.sweeper.conditional.model=.*must map values"),
        (
            FAMILIES,
            PARAMS,
            ("hydra/sweeper/sampler=grid",),
            r"^hydra.sweeper.sampler='grid': runs one fixed grid and cannot sample hydra.sweeper.conditional",
        ),
    ],
)
def test_bad_conditional_spaces_are_one_line_before_anything_runs(
    plan_with, conditional, params, overrides, message
):
    with pytest.raises(SweeplabError, match=message) as err:
        plan_with(conditional, params, overrides)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_conditional_study_trains_each_family_with_only_its_params(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna_fast",
        "search=families_test",
        "exp_name=families",
        "hydra.sweeper.n_trials=6",
        "hydra/sweeper/sampler=random",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.quick_validation.epochs=1",
        *QUICK,
    ]
    trials = sweep(args, tmp_path, study="families_fast").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    for t in trials:
        model = t.params["model"]
        assert all(_family(n) in (None, model) for n in t.params)
        used = OmegaConf.load(Path(t.user_attrs["output_dir"]) / "config_resolved.yaml")
        assert used.models.net.name == model
        for name, value in t.params.items():  # what was sampled is what the job trained with
            if name != "model":  # the model's name is checked above
                assert OmegaConf.select(used, key_of(name)) == pytest.approx(value)
        if model == "test_resnet":
            assert used.data.img_size == 32
    # the report's focused space keeps the conditions, and parses back inside the searched space
    focused = next((tmp_path / "studies" / "conf" / "search" / "focused").glob("*.yaml"))
    narrowed = SearchSpace.parse(OmegaConf.to_container(OmegaConf.load(focused).hydra.sweeper.params))
    searched = OmegaConf.to_container(OmegaConf.load(CONF / "search" / "families_test.yaml").hydra.sweeper)
    original = SearchSpace.parse(searched["params"], conditional=searched["conditional"])
    assert set(narrowed.all_distributions()) <= set(original.all_distributions())


@pytest.mark.slow
def test_the_stock_custom_search_space_hook_still_suggests_params(tmp_path):
    args = [
        "-m",
        "hparams_search=optuna_fast",
        "exp_name=hook",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.custom_search_space=tests.hooks.label_smoothing",
        "hydra.sweeper.quick_validation.epochs=1",
        *QUICK,
    ]
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for t in sweep(args, tmp_path, study="hook_fast", env=env).trials:
        value = t.params["models.loss.label_smoothing"]
        assert 0.01 <= value <= 0.02
        used = OmegaConf.load(Path(t.user_attrs["output_dir"]) / "config_resolved.yaml")
        assert used.models.loss.label_smoothing == pytest.approx(value)
