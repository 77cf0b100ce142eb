"""Hydra's sweep grammar maps to the Optuna distributions the stock optuna sweeper produces; bad ranges are refused."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeplab.errors import SweeplabError
from sweeplab.search.space import SearchSpace, format_value

# (override, what hydra-optuna-sweeper 1.2's create_optuna_distribution_from_override returns for it)
STOCK_MAPPING = [
    ("a=choice(1, 2, 3)", CategoricalDistribution([1, 2, 3])),
    ("a=choice(adam, sgd)", CategoricalDistribution(["adam", "sgd"])),
    ("a=choice(true, false)", CategoricalDistribution([True, False])),
    ("a=range(1, 10)", IntDistribution(1, 10, step=1)),
    ("a=range(0, 12, 4)", IntDistribution(0, 12, step=4)),
    ("a=range(0.0, 1.0, 0.25)", FloatDistribution(0.0, 1.0, step=0.25)),
    ("a=interval(0.1, 0.5)", FloatDistribution(0.1, 0.5)),
    ("a=interval(1, 8)", FloatDistribution(1.0, 8.0)),  # interval() is float unless cast with int()
    ("a=int(interval(1, 8))", IntDistribution(1, 8)),
    ("a=tag(log, interval(1e-5, 1e-2))", FloatDistribution(1e-5, 1e-2, log=True)),
    ("a=tag(log, int(interval(16, 256)))", IntDistribution(16, 256, log=True)),
]


@pytest.mark.parametrize(("line", "expected"), STOCK_MAPPING, ids=[m[0] for m in STOCK_MAPPING])
def test_sweep_grammar_maps_to_the_stock_plugins_distributions(line, expected):
    assert SearchSpace.parse({}, [line]).distributions["a"] == expected


def test_shuffled_range_is_categorical():
    dist = SearchSpace.parse({}, ["a=shuffle(range(1, 4))"]).distributions["a"]
    assert isinstance(dist, CategoricalDistribution) and sorted(dist.choices) == [1, 2, 3]


def test_group_choice_and_fixed_values_and_command_line_precedence():
    space = SearchSpace.parse(
        {"models.optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "trainer.max_epochs": "5"},
        ["model=choice(resnet18, convnext_tiny)", "models.optimizer.lr=interval(0.1, 0.2)", "seed=3"],
    )
    assert space.distributions["model"] == CategoricalDistribution(["resnet18", "convnext_tiny"])
    assert space.distributions["models.optimizer.lr"] == FloatDistribution(0.1, 0.2)
    assert space.fixed == {"trainer.max_epochs": "5", "seed": "3"}
    assert space.overrides({"model": "resnet18", "models.optimizer.lr": 0.15}) == [
        "trainer.max_epochs=5",
        "seed=3",
        "model=resnet18",
        "models.optimizer.lr=0.15",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a=interval(0.5, 0.1)", r"a='interval\(0.5, 0.1\)': an empty or inverted range"),
        ("a=interval(0.1, 0.1)", r"an empty or inverted range"),
        ("a=range(5, 1)", r"an empty or inverted range"),
        ("a=tag(log, interval(0, 1))", r"a log range needs low > 0"),
        ("a=tag(log, interval(-1e-3, 1e-2))", r"a log range needs low > 0"),
    ],
)
def test_empty_inverted_and_non_positive_log_ranges_are_refused(line, message):
    with pytest.raises(SweeplabError, match=message):
        SearchSpace.parse({}, [line])


def test_differences_name_added_removed_and_changed_params():
    old = SearchSpace.parse({}, ["a=interval(0.1, 0.5)", "b=choice(1, 2)"]).to_json()
    new = SearchSpace.parse({}, ["a=interval(0.1, 0.9)", "c=choice(x, y)"])
    diff = new.differences(old)
    assert diff[0] == "+c" and diff[1] == "-b"
    assert diff[2].startswith("a: Float(") and "high=0.5" in diff[2] and "high=0.9" in diff[2]
    assert new.differences(new.to_json()) == []


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (0.000513, "0.000513"),
        ("resnet18", "resnet18"),
        ("a b", "'a b'"),
        ("it's", "'it\\'s'"),
    ],
)
def test_sampled_values_become_valid_override_text(value, text):
    assert format_value(value) == text
