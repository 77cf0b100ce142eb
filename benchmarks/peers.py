"""sweeplab against what a team would pick instead: Ray Tune (OptunaSearch TPE + ASHA), Optuna by hand, the
stock hydra-optuna-sweeper and Syne Tune (ASHA that pauses and resumes).

Method: one tuning problem, three tuners, the same everything else.
- The training code is sweeplab's own (`sweeplab.training.train` on the composed `conf/train.yaml`: timm
  `test_resnet`, AdamW, cosine schedule, the same data split and decode cache, torchmetrics' val/f1 per
  epoch, the trial's value = its best val/f1). Ray and hand-written Optuna call it with one Lightning
  callback that reports each epoch to them (`EpochReport`), so what differs is only the tuner.
- The space: learning rate (log, 1e-4..1e-2), weight decay (0..0.1), dropout (0..0.3).
- The budget: `--trials` trials of at most `--epochs` epochs, 2 at a time, each on one core (the machine's
  2 cores), CPU only. Seeds: seed s drives the sampler and training (data split fixed).
- (a) sweeplab: `runners/train.py -m hparams_search=optuna` as shipped (TPE, its median pruner and warm-up,
  the guard, the preset's rescue: the best-ranked pruned trial resumed from its pause) with `n_jobs=2`.
  `--rescue-top-k K` sets `hydra.sweeper.rescue.top_k` instead of the preset's; `--sweeplab-set KEY=VALUE`
  adds any other override to its study (a preset change measured before it ships).
  (b) Ray Tune: `tune.Tuner` with `OptunaSearch` (TPE, seed s) and `ASHAScheduler` (max_t=epochs,
  grace_period=warm-up, reduction factor 2), `max_concurrent_trials=2`, 1 CPU per trial, a checkpoint
  saved and handed to Ray every epoch. Ray's ASHA stops a trial or lets it go on; it never pauses one, so
  there is nothing to resume on promotion.
  (c) Optuna by hand: 2 worker processes on one JournalStorage study (TPE seeded s+worker, MedianPruner
  with the same warm-up and 5 start-up trials), `MaxTrialsCallback` at `--trials`.
  (d) the stock `hydra-optuna-sweeper`, as its users run it on the same app: `runners/train.py -m
  hydra/sweeper=optuna hydra/launcher=joblib` (TPE seeded s with the plugin's defaults, `n_jobs=2`: each
  batch of 2 trials waits for both, no pruning), the same space in the plugin's grammar. The two plugins
  cannot share an environment (docs/any-app.md), so it runs where sweeplab's plugin is not seen: Python
  without `site` (`-S`), its path the stock packages (`--stock-pkgs`, made by `pip install --no-deps
  --target benchmarks/runs/stock-pkgs hydra-optuna-sweeper hydra-joblib-launcher`), sweeplab's library
  alone and this environment's site-packages, whose `.pth` files (the editable install's `src/`) are not
  read. Run where that folder exists; left out otherwise. hydra-optuna-sweeper 1.3.0 declares
  `optuna<3` but runs on Optuna 5 (`--no-deps`; the distributions it builds are deprecated, not gone).
  (e) Syne Tune: ASHA of the promotion type (`--syne-searcher random`; `kde`: BOHB), grace period
  `--warmup`, reduction factor 2, 2 workers of its local backend, each trial a process of
  `peers_syne_trial.py` that saves the fit's state every epoch; a trial not promoted at a rung is paused
  (its process ended) and resumed from that state when promoted, and Syne Tune removes paused trials'
  checkpoints early to keep at most 3 (`early_checkpoint_removal_kwargs`, sweeplab's `checkpoints.keep`
  default). Budget: `--trials` configurations; once the last has started no paused trial is promoted and
  the running ones go on to their next pause or end. Syne Tune 0.13.0 is the last release with promotion
  ASHA and checkpoint removal (0.14 needs BoTorch to import, 0.16 has neither); it declares numpy<1.27 and
  runs on numpy 2, so it is read from a folder of its own (`--syne-pkgs`, made by `pip install --no-deps
  --target benchmarks/runs/syne-pkgs syne-tune==0.13.0 dill sortedcontainers`). Left out where absent.
- Measured per system, problem and seed: the best value among trials that ran their whole budget, the
  epochs trained in all, wall time from launch to exit, and the best value found by 25%, 50% and 100% of
  that wall time (a trial counts from the moment it ends; every clock starts when the driver launches the
  system's process). Order interleaved: for each seed, the systems in a rotating order. Then
  `peers_breakdown.py` reads back the trials each system stored: where the wall time went (outside trials,
  busy and idle worker-seconds, seconds per epoch) and the best found at equal epochs.

    python benchmarks/peers.py                                   # three problems, 5 seeds, every system
    python benchmarks/peers.py --systems sweeplab --rescue-top-k 0 --out benchmarks/runs/peers_norescue
    python benchmarks/peers.py --problems noisy64 --first-seed 3 --seeds 1 --out benchmarks/runs/peers47d  # one more seed
    python benchmarks/peers.py --problems digits --seeds 1 --trials 2 --epochs 2 --warmup 1 --quick  # smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as L

from _common import PLAIN, ROOT, machine, sweeplab, timed

HERE = Path(__file__).resolve().parent
SYSTEMS = ("sweeplab", "ray", "optuna", "stock", "syne")
STOCK_PKGS = HERE / "runs" / "stock-pkgs"  # --stock-pkgs' default
SYNE_PKGS = HERE / "runs" / "syne-pkgs"  # --syne-pkgs' default
SWEEPLAB_KEPT_CHECKPOINTS = 3  # hydra.sweeper.checkpoints.keep's default: Syne Tune keeps as many
SPACE = {  # override key: (low, high, log)
    "models.optimizer.lr": (1e-4, 1e-2, True),
    "models.optimizer.weight_decay": (0.0, 0.1, False),
    "models.net.drop_rate": (0.0, 0.3, False),
}
QUICK = ["+trainer.limit_train_batches=3", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=1"]


# a problem: the bundled digits at 32 px, or one of hard_curves' noisy folders (its name under --data, its
# px, the share of labels replaced by a random class, how often each of the 1,797 digits is drawn, the pixel
# noise's standard deviation in grey levels)
PROBLEMS: dict[str, tuple[str, int, float, int, float] | None] = {
    "digits": None,
    "noisy64": ("noisy_digits", 64, 0.15, 1, 40.0),  # 1,797 images
    "noisy5k": ("noisy_digits_5k", 48, 0.15, 3, 40.0),  # 5,391 images; 15% wrong labels cap val/f1 near 0.84
    # 3,594 images, few wrong labels, heavy pixel noise: 8 epochs of a slow learning rate end far below a
    # fast one's (6 random configurations: best 0.872, median 0.723)
    "hard3k": ("hard_digits_3k", 32, 0.05, 2, 60.0),
}


def problem_overrides(problem: str, data: Path) -> list[str]:
    """The train config overrides of a problem (a noisy folder is under `data`, written once by the driver
    before anything is timed)."""
    from hard_curves import folder_data

    folder = PROBLEMS[problem]
    return ["data=digits"] if folder is None else folder_data(data / folder[0], folder[1])


def fixed(args: argparse.Namespace, problem: str, seed: int) -> list[str]:
    """What every system's every trial trains with, whatever the tuner."""
    return [
        *problem_overrides(problem, args.data),
        *PLAIN,
        "scheduler=cosine",
        "data.split_seed=42",
        f"seed={seed}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.accelerator=cpu",
        *(QUICK if args.quick else []),
    ]


# -- the training code the peers call: sweeplab's, with one callback that reports each epoch ------------

REPORT: Callable[[float, int, L.Trainer], bool] | None = None  # set by the tuner before it trains


class EpochReport(L.Callback):
    """Hands val/f1 after every epoch to the tuner (REPORT); stops the fit when the tuner says so."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or REPORT is None:
            return
        if REPORT(float(trainer.callback_metrics["val/f1"]), trainer.current_epoch + 1, trainer):
            trainer.should_stop = True


def compose_train(overrides: list[str], run_dir: Path) -> Any:
    """The composed train config of `overrides` with `EpochReport` among its callbacks, writing to `run_dir`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", [*overrides, "+callbacks.peer._target_=peers.EpochReport"], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.root_dir = str(run_dir)
    return cfg


def train_once(overrides: list[str], run_dir: Path) -> float:
    """sweeplab's training run on the composed train config, outside any study; returns its best val/f1."""
    from sweeplab.training import train

    return float(train(compose_train(overrides, run_dir)))


def params_overrides(params: dict[str, float]) -> list[str]:
    return [f"{k}={v!r}" for k, v in params.items()]


# -- (a) sweeplab --------------------------------------------------------------------------------------


def run_sweeplab(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    import optuna

    space = [
        f"{k}=" + (f"tag(log, interval({lo}, {hi}))" if log else f"interval({lo}, {hi})")
        for k, (lo, hi, log) in SPACE.items()
    ]
    study = f"peers_{problem}_{seed}"
    cmd = sweeplab(
        "-m",
        "hparams_search=optuna",
        "~search",
        *space,
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.study_name={study}",
        *([] if args.rescue_top_k is None else [f"hydra.sweeper.rescue.top_k={args.rescue_top_k}"]),
        *args.sweeplab_set,
        "hydra.sweeper.quick_validation.enabled=false",
        "hydra.sweeper.report=false",
        "hydra.sweeper.timeout=null",
        "hydra.sweeper.max_failure_rate=0",
        f"exp_name={study}",
        *fixed(args, problem, seed),
    )
    started = time.time()
    wall = timed(cmd, out, out / f"{study}.log", env=_env(out))
    trials = optuna.load_study(
        study_name=study, storage=f"sqlite:///{out / 'studies' / study}.db"
    ).get_trials()
    done = [
        (t.datetime_complete.timestamp() - started, t.value)
        for t in trials
        if t.state.name == "COMPLETE" and t.value is not None
    ]
    epochs = sum(int(t.user_attrs.get("epochs_run", len(t.intermediate_values))) for t in trials)
    return _result(wall, done, epochs)


# -- (b) Ray Tune --------------------------------------------------------------------------------------


def run_ray(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    """Ray in a process of its own (its runtime starts and stops with it), timed from launch to exit."""
    return _worker_run("ray", args, problem, out, seed)


def ray_study(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    overrides = fixed(args, problem, seed)
    env = {**_env(out), "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    started = args.launched or time.time()  # the clock starts at launch, as sweeplab's does

    def trainable(config: dict[str, float]) -> None:
        import tempfile

        import peers  # the module Hydra instantiates EpochReport from
        import torch

        torch.set_num_threads(1)

        def report(value: float, epoch: int, trainer: L.Trainer) -> bool:
            with tempfile.TemporaryDirectory() as tmp:
                trainer.save_checkpoint(Path(tmp) / "epoch.ckpt")
                tune.report({"val_f1": value, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(tmp))
            return False  # ASHA stops the trial itself

        peers.REPORT = report
        run_dir = Path(tune.get_context().get_trial_dir()) / "run"
        peers.train_once([*overrides, *params_overrides(config)], run_dir)

    space = {
        k: (tune.loguniform(lo, hi) if log else tune.uniform(lo, hi)) for k, (lo, hi, log) in SPACE.items()
    }
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_f1",
            mode="max",
            search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed)),
            scheduler=ASHAScheduler(max_t=args.epochs, grace_period=args.warmup, reduction_factor=2),
            num_samples=args.trials,
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(name=f"ray_{problem}_{seed}", storage_path=str(out / "ray"), verbose=0),
    )
    results = tuner.fit()
    done, epochs = [], 0
    for result in results:
        frame = result.metrics_dataframe
        if frame is None or frame.empty:
            continue
        epochs += int(frame["training_iteration"].max())
        if int(frame["training_iteration"].max()) >= args.epochs:
            done.append((float(frame["timestamp"].max()) - started, float(frame["val_f1"].max())))
    ray.shutdown()
    return {"done": done, "epochs": epochs}


# -- (c) Optuna by hand --------------------------------------------------------------------------------


def run_optuna(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    return _worker_run("optuna", args, problem, out, seed)


def optuna_study(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    """Two worker processes on one JournalStorage study, as Optuna's docs run parallel workers."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    name = f"optuna_{problem}_{seed}"
    journal = out / f"{name}.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna.create_study(study_name=name, storage=storage, direction="maximize")
    started = args.launched or time.time()  # the clock starts at launch, as sweeplab's does
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "optuna-worker",
                "--worker",
                str(i),
                *_cli(args, problem, out, seed),
            ],
            env={**os.environ, **_env(out)},
            stdout=(out / f"{name}_{i}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    if any(w.wait() != 0 for w in workers):
        sys.exit(f"an Optuna worker failed; its log: {out / name}_*.log")
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    done = [
        (t.datetime_complete.timestamp() - started, t.value)
        for t in trials
        if t.state.name == "COMPLETE" and t.value is not None
    ]
    return {"done": done, "epochs": sum(len(t.intermediate_values) for t in trials)}


def optuna_worker(args: argparse.Namespace, problem: str, out: Path, seed: int) -> None:
    import optuna
    import peers  # the module Hydra instantiates EpochReport from
    import torch
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.study import MaxTrialsCallback

    torch.set_num_threads(1)
    name = f"optuna_{problem}_{seed}"
    study = optuna.load_study(
        study_name=name,
        storage=JournalStorage(JournalFileBackend(str(out / f"{name}.journal"))),
        sampler=optuna.samplers.TPESampler(seed=seed + args.worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=args.warmup),
    )
    overrides = fixed(args, problem, seed)

    def objective(trial: optuna.Trial) -> float:
        params = {k: trial.suggest_float(k, lo, hi, log=log) for k, (lo, hi, log) in SPACE.items()}
        pruned = []

        def report(value: float, epoch: int, trainer: L.Trainer) -> bool:
            trial.report(value, epoch)
            if trial.should_prune():
                pruned.append(epoch)
                return True
            return False

        peers.REPORT = report
        value = peers.train_once([*overrides, *params_overrides(params)], out / name / str(trial.number))
        if pruned:
            raise optuna.TrialPruned()
        return value

    study.optimize(objective, callbacks=[MaxTrialsCallback(args.trials, states=None)])


# -- (d) the stock hydra-optuna-sweeper ---------------------------------------------------------------


def stock_installed(pkgs: Path) -> bool:
    plugins = pkgs / "hydra_plugins"
    return (plugins / "hydra_optuna_sweeper").is_dir() and (plugins / "hydra_joblib_launcher").is_dir()


def stock_path(pkgs: Path, out: Path) -> str:
    """The Python path of the stock sweeper's runs: its packages, sweeplab's library without sweeplab's
    plugin, and this environment's site-packages (read as plain folders: no .pth, so no editable src/)."""
    lib = out / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    link = lib / "sweeplab"
    if not link.exists():
        spec = importlib.util.find_spec("sweeplab")
        assert spec is not None and spec.submodule_search_locations, "sweeplab is not installed"
        link.symlink_to(spec.submodule_search_locations[0], target_is_directory=True)
    site = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return os.pathsep.join([str(pkgs), str(lib), *site])


def run_stock(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    import optuna

    space = [
        f"{k}=" + (f"tag(log, interval({lo}, {hi}))" if log else f"interval({lo}, {hi})")
        for k, (lo, hi, log) in SPACE.items()
    ]
    study = f"stock_{problem}_{seed}"
    (out / "studies").mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out / 'studies' / study}.db"
    cmd = [
        sys.executable,
        "-S",
        str(ROOT / "runners" / "train.py"),
        "-m",
        "hydra/sweeper=optuna",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *space,
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.direction=maximize",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.sampler.seed={seed}",
        f"exp_name={study}",
        *fixed(args, problem, seed),
    ]
    env = {**_env(out), "PYTHONPATH": stock_path(args.stock_pkgs, out)}
    started = time.time()
    wall = timed(cmd, out, out / f"{study}.log", env=env)
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    done = [
        (t.datetime_complete.timestamp() - started, t.value)
        for t in trials
        if t.state.name == "COMPLETE" and t.value is not None
    ]
    return _result(wall, done, args.epochs * len(done))  # no pruning, no early stopping: every epoch runs


# -- (e) Syne Tune ------------------------------------------------------------------------------------


def syne_installed(pkgs: Path) -> bool:
    return (pkgs / "syne_tune" / "optimizer" / "schedulers" / "hyperband_promotion.py").is_file()


def run_syne(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    """Syne Tune in a process of its own, its packages (`--syne-pkgs`) first on the path."""
    path = os.pathsep.join([str(args.syne_pkgs), str(HERE)])
    env = {**_env(out), "PYTHONPATH": path, "SYNETUNE_FOLDER": str(out)}
    return _worker_run("syne", args, problem, out, seed, env=env)


def syne_study(args: argparse.Namespace, problem: str, out: Path, seed: int) -> dict[str, Any]:
    import logging

    import peers_syne_trial
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.config_space import loguniform, uniform
    from syne_tune.optimizer.baselines import ASHA, BOHB

    logging.getLogger("syne_tune").setLevel(logging.WARNING)
    started = args.launched or time.time()
    setup = out / "setup.json"
    setup.write_text(json.dumps({"overrides": fixed(args, problem, seed), "out": str(out)}))
    names = {key: name for name, key in peers_syne_trial.NAMES.items()}
    space: dict[str, Any] = {
        names[k]: (loguniform(lo, hi) if log else uniform(lo, hi)) for k, (lo, hi, log) in SPACE.items()
    }
    space |= {"epochs": args.epochs, "setup": str(setup)}
    scheduler = (ASHA if args.syne_searcher == "random" else BOHB)(
        space,
        type="promotion",  # a trial not promoted at a rung is paused, and resumed from its checkpoint later
        max_resource_attr="epochs",
        resource_attr="epoch",
        grace_period=args.warmup,
        reduction_factor=2,
        metric="val_f1",
        mode="max",
        random_seed=seed,
        early_checkpoint_removal_kwargs={"max_num_checkpoints": SWEEPLAB_KEPT_CHECKPOINTS},
    )
    tuner = Tuner(
        trial_backend=LocalBackend(entry_point=str(HERE / "peers_syne_trial.py"), delete_checkpoints=True),
        scheduler=scheduler,
        # `--trials` configurations (it stops once more than max_num_trials_started have started); the trials
        # running then go on to their next pause or end. The wall clock bound is only there because Syne
        # Tune's checkpoint removal needs one.
        stop_criterion=StoppingCriterion(
            max_num_trials_started=args.trials - 1, max_wallclock_time=24 * 3600
        ),
        wait_trial_completion_when_stopping=True,
        n_workers=2,
        sleep_time=0.2,
        results_update_interval=30,
        print_update_interval=3600,
        save_tuner=False,
        tuner_name=f"syne-{problem}-{seed}",
        suffix_tuner_name=False,
    )
    tuner.run()
    segments = syne_segments(out, args.epochs)
    done = [(s["end"] - started, s["value"]) for s in segments if s["value"] is not None]
    return {"done": done, "epochs": sum(s["epochs"] for s in segments)}


def syne_segments(out: Path, budget: int) -> list[dict[str, Any]]:
    """Each start of a Syne Tune trial (its first start, each resume): when it started and ended, the epochs
    it trained, and its trial's best value where it reached the whole budget of `budget` epochs."""
    lines = [json.loads(line) for line in (out / "segments.jsonl").read_text().splitlines() if line.strip()]
    runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for line in lines:
        runs.setdefault((line["trial"], line["start"]), []).append(line)
    found = []
    for (trial, start), reports in sorted(runs.items(), key=lambda kv: kv[0][1]):
        last = max(reports, key=lambda r: r["epoch"])
        earlier = [r["value"] for r in lines if r["trial"] == trial and r["at"] <= last["at"]]
        found.append(
            {
                "trial": trial,
                "start": start,
                "end": last["at"],
                "epochs": int(last["epoch"]) - int(last["resumed"]),
                "value": max(earlier) if int(last["epoch"]) >= budget else None,
            }
        )
    return found


# -- the run ------------------------------------------------------------------------------------------


def _env(out: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(out / "cache")}  # one decode cache for all three: the same data work


def _cli(args: argparse.Namespace, problem: str, out: Path, seed: int) -> list[str]:
    return [
        "--problems",
        problem,
        "--seed-value",
        str(seed),
        "--out",
        str(out),
        "--trials",
        str(args.trials),
        "--epochs",
        str(args.epochs),
        "--warmup",
        str(args.warmup),
        "--data",
        str(args.data),
        "--syne-searcher",
        args.syne_searcher,
        *(["--quick"] if args.quick else []),
    ]


def _worker_run(
    system: str,
    args: argparse.Namespace,
    problem: str,
    out: Path,
    seed: int,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run `system` in a fresh process (so its start-up counts, as sweeplab's does), timed from launch to exit."""
    record = out / f"{system}_{problem}_{seed}.json"
    cmd = [sys.executable, __file__, "--role", system, *_cli(args, problem, out, seed)]
    cmd += ["--launched", repr(time.time())]
    wall = timed(cmd, out, out / f"{system}_{problem}_{seed}.log", env=env)
    found = json.loads(record.read_text())
    return _result(wall, [tuple(d) for d in found["done"]], found["epochs"])


def _result(wall: float, done: list[tuple[float, float]], epochs: int) -> dict[str, Any]:
    done = sorted(done)
    best_by = {}
    for share in (0.25, 0.5, 1.0):
        values = [v for t, v in done if t <= share * wall]
        best_by[share] = max(values) if values else None
    return {
        "wall": wall,
        "epochs": epochs,
        "best": max((v for _, v in done), default=None),
        "anytime": {str(k): v for k, v in best_by.items()},
        "done": done,
    }


def table(results: dict[str, Any], problem: str) -> str:
    runs = [r for r in results["runs"] if r["problem"] == problem]
    top: dict[int, float] = {}  # per seed: the best any system found
    for r in runs:
        if r["best"] is not None:
            top[r["seed"]] = max(top.get(r["seed"], r["best"]), r["best"])
    lines = [
        f"| {problem} | median best | median gap to the seed's best | epochs | wall (s) | best at 25% / 50% / 100% of wall |",
        "|---|---|---|---|---|---|",
    ]

    def med(values: list[float | None]) -> str:
        got = [v for v in values if v is not None]
        return f"{statistics.median(got):.4f}" if got else "-"

    for system in SYSTEMS:
        mine = [r for r in runs if r["system"] == system]
        if not mine:
            continue
        gaps = [top[r["seed"]] - r["best"] for r in mine if r["best"] is not None]
        anytime = " / ".join(med([r["anytime"][k] for r in mine]) for k in ("0.25", "0.5", "1.0"))
        lines.append(
            f"| {system} | {med([r['best'] for r in mine])} | {med(gaps)} | "
            f"{statistics.median(r['epochs'] for r in mine):.0f} | {statistics.median(r['wall'] for r in mine):.1f} | {anytime} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="the peers' epochs before a trial may be stopped (sweeplab: its preset's)",
    )
    parser.add_argument(
        "--systems", nargs="+", default=None, choices=SYSTEMS, help="default: all, stock where installed"
    )
    parser.add_argument(
        "--stock-pkgs",
        type=Path,
        default=STOCK_PKGS,
        help="where hydra-optuna-sweeper and its joblib launcher are",
    )
    parser.add_argument(
        "--syne-pkgs",
        type=Path,
        default=SYNE_PKGS,
        help="where Syne Tune 0.13 is (the last with promotion ASHA)",
    )
    parser.add_argument(
        "--syne-searcher",
        default="random",
        choices=["random", "kde"],
        help="Syne Tune's searcher (kde: BOHB)",
    )
    parser.add_argument(
        "--rescue-top-k",
        type=int,
        default=None,
        help="sweeplab's hydra.sweeper.rescue.top_k (default: the preset's)",
    )
    parser.add_argument(
        "--sweeplab-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override of sweeplab's study, e.g. hydra.sweeper.sampler.multivariate=true (repeatable)",
    )
    parser.add_argument(
        "--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed+seeds-1"
    )
    parser.add_argument("--quick", action="store_true", help="a few batches per epoch (the smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "peers")
    parser.add_argument("--figures", type=Path, default=None, help="where the PNGs go (default: --out)")
    parser.add_argument(
        "--role", default="driver", choices=["driver", "ray", "optuna", "optuna-worker", "syne"]
    )
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--launched", type=float, default=None, help="when the driver launched this role")
    parser.add_argument("--seed-value", type=int, default=0)
    parser.add_argument(
        "--data", type=Path, default=None, help="where the noisy folders are written (default: --out)"
    )
    args = parser.parse_args()
    installed = {"stock": stock_installed(args.stock_pkgs), "syne": syne_installed(args.syne_pkgs)}
    if args.systems is None:
        args.systems = [s for s in SYSTEMS if installed.get(s, True)]
    elif "stock" in args.systems and not installed["stock"]:
        parser.error(
            f"--systems stock: no hydra-optuna-sweeper and hydra-joblib-launcher in {args.stock_pkgs} "
            "(pip install --no-deps --target <it> hydra-optuna-sweeper hydra-joblib-launcher)"
        )
    elif "syne" in args.systems and not installed["syne"]:
        parser.error(
            f"--systems syne: no Syne Tune 0.13 in {args.syne_pkgs} "
            "(pip install --no-deps --target <it> syne-tune==0.13.0 dill sortedcontainers)"
        )
    args.stock_pkgs = args.stock_pkgs.resolve()
    args.syne_pkgs = args.syne_pkgs.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.data = (args.data or out).resolve()

    if args.role != "driver":
        problem, seed = args.problems[0], args.seed_value
        if args.role == "optuna-worker":
            optuna_worker(args, problem, out, seed)
            return
        found = {"ray": ray_study, "optuna": optuna_study, "syne": syne_study}[args.role](
            args, problem, out, seed
        )
        (out / f"{args.role}_{problem}_{seed}.json").write_text(json.dumps(found))
        return

    from hard_curves import make_folder

    for problem in args.problems:
        if PROBLEMS[problem] is not None:  # once, untimed: every system reads the same files
            name, px, label_noise, renders, pixel_noise = PROBLEMS[problem]
            make_folder(args.data / name, px, label_noise, seed=0, renders=renders, pixel_noise=pixel_noise)
    runners = {
        "sweeplab": run_sweeplab,
        "ray": run_ray,
        "optuna": run_optuna,
        "stock": run_stock,
        "syne": run_syne,
    }
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(args.stock_pkgs, args.syne_pkgs),
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": earlier_runs(out / "results.json", args, seeds),
    }
    for seed in seeds:
        for problem in args.problems:
            turn = seed % len(SYSTEMS)
            order = SYSTEMS[turn:] + SYSTEMS[:turn]  # interleaved: each system goes first in turn
            for system in (s for s in order if s in args.systems):
                run = runners[system](args, problem, out / f"{system}_{problem}_{seed}", seed)
                results["runs"].append({"system": system, "problem": problem, "seed": seed, **run})
                print(
                    f"  {problem} seed {seed} {system}: best {run['best']}, {run['epochs']} epochs, {run['wall']:.1f}s",
                    flush=True,
                )
                (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"machine: {results['machine']}; {results['versions']}")
    counted = sorted({r["seed"] for r in results["runs"]})
    print(f"{args.trials} trials of at most {args.epochs} epochs, 2 at a time, seeds {counted}")
    for problem in args.problems:
        print(table(results, problem))
    from peers_breakdown import breakdown, figure, time_table

    rows = breakdown(results, out)  # where the time went, and the best at equal epochs and equal wall
    (out / "breakdown.json").write_text(json.dumps(rows, indent=1))
    for problem, found in rows.items():
        print(time_table(problem, found))
        figure(problem, found, (args.figures or out) / f"peers_{problem}.png")


def earlier_runs(path: Path, args: argparse.Namespace, seeds: range) -> list[dict[str, Any]]:
    """The runs an earlier call wrote to the same --out, less those this call runs again: seeds run in
    separate calls (--first-seed) end in one table. A budget that differs is refused, not mixed in."""
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    for key in ("trials", "epochs", "quick", "sweeplab_set", "rescue_top_k"):
        if earlier["args"].get(key) != str(getattr(args, key)):
            raise SystemExit(
                f"--{key.replace('_', '-')}={getattr(args, key)}: {path} holds runs made with "
                f"{earlier['args'].get(key)}; pick another --out"
            )
    again = {
        (system, problem, seed) for system in args.systems for problem in args.problems for seed in seeds
    }
    return [r for r in earlier["runs"] if (r["system"], r["problem"], r["seed"]) not in again]


def versions(stock_pkgs: Path, syne_pkgs: Path) -> str:
    import importlib.metadata as md

    names = ("ray", "optuna", "lightning", "torch", "hydra-core")
    found = []
    for n in names:
        try:
            found.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            found.append(f"{n} absent")
    for dist in md.distributions(path=[str(stock_pkgs), str(syne_pkgs)]):
        found.append(f"{dist.metadata['Name']} {dist.version}")
    return ", ".join(found)


if __name__ == "__main__":
    main()
