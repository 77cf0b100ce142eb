"""Shared helpers: compose the real configs in-process, or run the real entry points in a subprocess."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from benchmarks.scale import free_port, serving, start_proxy  # noqa: F401  (the tests' storage proxy)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# What every CPU test run uses: tiny, few steps, no progress bar.
FAST = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
]

# Studies through the CLI: tiny epochs (a handful of batches each), no progress bar.
QUICK = [
    "+trainer.limit_train_batches=5",
    "+trainer.limit_val_batches=3",
    "+trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
]

# The plots a single-objective study gets.
PLOTS = {
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "slice",
    "contour",
    "intermediate_values",
}

# A retrain command as a sweep report prints it (a tuned preset, then its exact values).
SEED_004_COMMAND = [
    "preset=efficientnet_b4_lr_optimized",
    "exp_name=efficientnet_b4_run8_replication",
    "models.optimizer.lr=0.0005134333170096499",
    "models.optimizer.weight_decay=6.797303101020006e-05",
    "models.scheduler.T_max=24",
    "models.scheduler.eta_min=6.388390006720873e-06",
    "trainer.max_epochs=22",
]


def fast(*extra: str) -> list[str]:
    """FAST plus `extra`, without a progress bar unless `extra` picks another callbacks option."""
    quiet = [] if any(o.startswith("callbacks=") for o in extra) else ["callbacks.progress=null"]
    return [*FAST, *quiet, *extra]


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The decode cache of every test (and of the commands it runs) in a fresh folder: tests never write
    into the real ~/.cache, and none reads what another left."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """compose(overrides) → the root config as runners/train.py would see it, writing under tmp_path."""

    def _compose(
        overrides: list[str] | None = None, config_name: str = "train", keep_hydra: bool = False
    ) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides or []), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            if not keep_hydra:  # as in a real run: the task sees the job config, Hydra's node via HydraConfig
                del cfg["hydra"]
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.root_dir = str(tmp_path)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


# Children of the tests start with SIGINT at its default, as in a terminal, so a test's Ctrl-C stops them.
# A shell that starts a command in the background without job control (CI runners may) makes it ignore
# SIGINT, and an ignored signal stays ignored across exec while a caught one resets to the default: so
# pytest catches it. A preexec_fn would do the same per child, but it runs Python in a forked copy of this
# process, where the gRPC threads of a storage proxy's client (tests/test_proxy.py) can abort the child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_cli(
    args: list[str],
    cwd: Path,
    script: str = "runners/train.py",
    env: dict | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run an entry point as a user would, from `cwd`."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # the user's, not the test's
    full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Swept(NamedTuple):
    """What `sweep` ran: the finished command, and the trials of its study where one was named."""

    result: subprocess.CompletedProcess
    trials: list | None


def sweep(args: list[str], cwd: Path, study: str | None = None, ok: bool = True, **run_cli_kwargs) -> Swept:
    """Run an entry point from `cwd` as `run_cli` does (`run_cli_kwargs`: script, env, timeout); with `ok`,
    assert it exited 0 (its stderr's tail the message); with `study`, load that study's trials from `cwd`.
    Unpacks as `result, trials = sweep(...)`."""
    result = run_cli(args, cwd, **run_cli_kwargs)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return Swept(result, load_trials(cwd, study) if study else None)


def on_search_path(root: Path, config: str, text: str) -> str:
    """Write `text` as the config `config` (`<group>/<name>`) to `root/extra/<group>/<name>.yaml`; the override
    that puts `root/extra` on Hydra's search path."""
    path = root / "extra" / f"{config}.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return f"hydra.searchpath=[file://{path.parent.parent}]"


def sweep_dirs(root: Path, *under: str) -> list[Path]:
    """The sweep dirs below `root/multirun/<under>` (`<exp_name>/<study>/<time>` for a study of
    runners/train.py), oldest first: the dirs holding job dirs 0/, 1/, ... (the `latest` links are not
    walked into)."""
    base = root.joinpath("multirun", *under)
    found = {p.parent for p in base.rglob("*") if p.name.isdigit() and p.is_dir() and not p.is_symlink()}
    return sorted(found, key=lambda p: (p.name, str(p)))


def load_trials(root: Path, study_name: str) -> list:
    """The trials of a study in the default storage under `root` (where the command ran)."""
    import optuna

    storage = f"sqlite:///{root / 'studies' / study_name}.db"
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def age_trials(db: Path, seconds: float) -> None:
    """Every heartbeat and start time in the SQLite study file `db` moved `seconds` into the past: time
    passing for the grace periods that judge trials dead, without a test waiting for it (or racing it)."""
    shift = (f"-{seconds:g} seconds",)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, ?)", shift)
        con.execute("UPDATE trials SET datetime_start = datetime(datetime_start, ?)", shift)
    con.close()


def fresh_heartbeats(db: Path, within: float) -> bool:
    """Every heartbeat in `db` was written at most `within` seconds ago (by the database's clock)."""
    with sqlite3.connect(db) as con:
        ages = con.execute("SELECT strftime('%s', 'now') - strftime('%s', heartbeat) FROM trial_heartbeats")
        fresh = all(age <= within for (age,) in ages)
    con.close()
    return fresh
