"""`hydra.sweeper` typed: each key's type, default and range, written once.

The keys are a superset of hydra-optuna-sweeper's (sampler, direction, storage, study_name, n_trials,
n_jobs, max_failure_rate, params, custom_search_space) with the same meaning. The plugin registers
`SweeplabSweeperConf` as `hydra/sweeper=sweeplab`; the plan (`sweeplab.search.plan`) checks the rules that
tie keys to each other or to the job config.
"""

from dataclasses import dataclass, field
from typing import Any

from sweeplab.errors import config_error

DIRECTIONS = ("minimize", "maximize")
# The smallest heartbeat interval: SQLite stores heartbeats to the second and a busy sweep may write one a
# second or two late, so a shorter grace period (two intervals) could take a live trial for dead.
MIN_HEARTBEAT_S = 5
# The smallest stall_timeout: a busy machine may hold a worker's once-a-second beat back a moment.
MIN_STALL_S = 3
# `_target_` of the sweeper (the plugin's class, named, never imported here): how a job or a callback
# knows it runs inside a sweeplab study.
TARGET = "hydra_plugins.sweeplab_sweeper.sweeplab_sweeper.SweeplabSweeper"


@dataclass
class StopConf:
    # stop after this many finished trials without a new best (improvement > min_delta)
    patience: int | None = None
    min_delta: float = 0.0
    # stop once the best value reaches this (in the study's direction)
    target: float | None = None

    def __post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise config_error("hydra.sweeper.stop.patience", self.patience, "must be at least 1, or null")


@dataclass
class QuickValidationConf:
    """Applied to every trial of a study, never to single runs: fewer epochs, a batch size, part of the data."""

    enabled: bool = True
    epochs: int | None = None
    batch_size: int | None = None
    train_fraction: float | None = None
    # k: every trial trains k models on stratified folds (data.folds=k); its value is their mean
    folds: int | None = None

    def __post_init__(self) -> None:
        key = "hydra.sweeper.quick_validation"
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise config_error(f"{key}.{name}", value, "must be at least 1")
        if self.folds is not None and self.folds < 2:
            raise config_error(
                f"{key}.folds",
                self.folds,
                "must be an integer >= 2 (k-fold), or null for one train/val split",
            )
        if self.train_fraction is not None and not 0.0 < self.train_fraction <= 1.0:
            raise config_error(f"{key}.train_fraction", self.train_fraction, "must lie in (0, 1]")


@dataclass
class GuardConf:
    """Rules that veto the pruner (`sweeplab.search.pruning`); all off here, on in hparams_search=optuna."""

    leader: bool = False  # never prune the best value any trial reported at this step
    margin: float | None = None  # ... nor one within this of the best finished trial's value
    threshold: float | None = None  # ... nor one past this absolute value (in the study's direction)

    def __post_init__(self) -> None:
        if self.margin is not None and self.margin < 0:
            raise config_error(
                "hydra.sweeper.guard.margin", self.margin, "must be a number >= 0, or null (off)"
            )


@dataclass
class RescueConf:
    top_k: int = 0  # once n_trials have started: the k best-ranked pruned trials run again, unpruned

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise config_error("hydra.sweeper.rescue.top_k", self.top_k, "must be an integer >= 0")


# A pruned trial's rank is the share of values at its prune step it beat, and trials that report there later
# move it: the one rescue picks at the end may not be the one that ranked first when the budget removed the
# others' checkpoints. With one kept, a noisy5k study's rescue trained from the first epoch; with two more,
# all 8 rescues of the hard3k studies resumed from their pause (BENCHMARKS.md, "Five systems").
PAUSE_SLACK = 2


def paused_budget(keep: int | None, top_k: int) -> int:
    """How many paused checkpoints a study keeps: `pause.keep`, else what rescue resumes plus the slack."""
    if keep is not None:
        return keep
    return top_k + PAUSE_SLACK if top_k else 0


@dataclass
class PauseConf:
    """A pruned trial keeps the checkpoint of the epoch it was pruned at, so a rescue resumes it there."""

    # how many paused checkpoints are kept (the best-ranked at their prune step, as rescue ranks them);
    # null: rescue.top_k + PAUSE_SLACK (paused_budget), 0: none (a rescue then trains from scratch)
    keep: int | None = None

    def __post_init__(self) -> None:
        if self.keep is not None and self.keep < 0:
            raise config_error("hydra.sweeper.pause.keep", self.keep, "must be an integer >= 0, or null")


@dataclass
class CheckpointsConf:
    """What a study keeps on disk of the checkpoints its trials' fits saved."""

    # only the `keep` best complete trials keep theirs (removed as a trial falls out); pruned and failed
    # trials keep none; null: every trial keeps its own
    keep: int | None = 3

    def __post_init__(self) -> None:
        if self.keep is not None and self.keep < 0:
            raise config_error(
                "hydra.sweeper.checkpoints.keep", self.keep, "must be an integer >= 0, or null"
            )


@dataclass
class SweeplabSweeperConf:
    _target_: str = TARGET
    _recursive_: bool = False  # sampler and pruner are built by the sweeper, after its checks
    # _self_ first: the chosen sampler/pruner configs fill the `sampler`/`pruner` keys below
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "median"}])

    # --- the stock plugin's keys, same meaning ---
    sampler: Any = None
    direction: Any = "minimize"  # or a list of them, one per objective
    storage: Any = None  # a SQLAlchemy URL or a storage proxy's grpc://host:port; null: sqlite:///<cwd>/studies/<study_name>.db
    study_name: str | None = None  # null: the app's job name (hydra.job.name) + study_suffix
    n_trials: int = 20  # the study's total, counted across reruns and workers
    n_jobs: int = 1  # trials at once; > 1 with the basic launcher: one process per trial, no batch barrier
    max_failure_rate: float = 0.0
    search_space: Any = None  # removed from the stock plugin; refused with a pointer to `params`
    params: dict[str, str] | None = None
    custom_search_space: str | None = None

    # --- sweeplab's own ---
    # a function (cfg) -> None that raises where the app's job would reject its config before training;
    # called on the configurations the space can produce, before the study is created or written to
    check: str | None = None
    pruner: Any = None
    # params only some trials get: {parent key: {value: {param: sweep or value}}}, e.g. ConvNeXt's layer
    # scale only when model=convnext_tiny (see conf/search/families.yaml)
    conditional: Any = None
    guard: GuardConf = field(default_factory=GuardConf)
    # staged search: {from: <earlier study>} searches the space narrowed around its top trials
    focus: dict[str, Any] = field(default_factory=dict)  # {} or {from: <study>}
    rescue: RescueConf = field(default_factory=RescueConf)
    pause: PauseConf = field(default_factory=PauseConf)
    # each epoch, a running trial saves its whole training state (one file, replaced): when the trial is
    # interrupted (SIGTERM, preemption, a node lost, a worker killed), its re-run resumes from its last finished
    # epoch instead of the first; Ctrl-C's trials start over. false: no file, re-runs start over
    resume_interrupted: bool = True
    checkpoints: CheckpointsConf = field(default_factory=CheckpointsConf)
    study_suffix: str = ""
    # seconds for this invocation of the study: after it no new trial starts, the running ones end (a hung
    # worker at most stall_timeout later)
    timeout: float | None = None
    stop: StopConf = field(default_factory=StopConf)
    quick_validation: QuickValidationConf = field(default_factory=QuickValidationConf)
    allow_space_change: bool = False
    # seconds between the heartbeats a sweep records for its running trials; a trial silent for 2 intervals
    # (its sweep or machine died) is failed and re-run by any sweep on the storage
    heartbeat_interval: int | None = 60
    # seconds the sweep and its jobs wait out a storage that goes away mid-study (a database restart, a full
    # disk), retrying with backoff, before stopping with a one-line error (resume with the same command);
    # 0: stop at the first failed storage call. Opening the storage at the start never waits.
    storage_retry: float = 600.0
    # seconds a worker process (n_jobs > 1 under the basic launcher) may show no sign of life before it is
    # killed and its trial stored FAIL (interrupted, lost: stalled) and re-run: its own thread beats each
    # second, so only a stopped, hung or GIL-deadlocked process goes silent, never a slow epoch. 60: the
    # latest beat measured on a 2-core machine loaded past its cores, 100 MB checkpoints saved meanwhile,
    # came 0.018 s late (BENCHMARKS.md, benchmarks/beat_delays.py); 60 s is that margin thousands of times
    # over, and a hung worker holds a study one minute, not ten. null: off. Trials run in the sweep's own
    # process (n_jobs=1) or by another launcher (SLURM) are not watched.
    stall_timeout: float | None = 60
    # true: start the next n_jobs trials only when the whole batch has ended (the stock plugin's way)
    synchronous: bool = False
    share_gpus: bool = False  # allow n_jobs * devices_per_trial > visible GPUs (workers then share GPUs)
    # devices one trial trains on (the job's own DDP ranks, e.g. trainer.devices=2 trainer.strategy=ddp; the
    # train app's study presets follow trainer.devices):
    # worker i gets GPUs [i*k, (i+1)*k); > 1 runs every trial in a worker process, n_jobs=1 included
    devices_per_trial: int = 1
    # at the end: plots, report.md/html and the best trial as preset=optimized/<study> (result files always)
    report: bool = True

    def __post_init__(self) -> None:
        """Each key's range; the rules that tie keys to each other or to the job config are in the plan."""
        key = "hydra.sweeper"
        if self.search_space:
            raise config_error(
                f"{key}.search_space",
                "...",
                "was removed from the stock plugin (Hydra 1.2); write the space in hydra.sweeper.params "
                "in the sweep grammar, e.g. x: interval(-5.5, 5.5), y: choice(-5, 0, 5)",
            )
        for name in ("n_trials", "n_jobs", "devices_per_trial"):
            if getattr(self, name) < 1:
                raise config_error(f"{key}.{name}", getattr(self, name), "must be an integer >= 1")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise config_error(f"{key}.max_failure_rate", self.max_failure_rate, "must lie in [0, 1]")
        if self.timeout is not None and self.timeout <= 0:
            raise config_error(f"{key}.timeout", self.timeout, "must be a number of seconds > 0, or null")
        if self.stall_timeout is not None and not MIN_STALL_S <= self.stall_timeout < float("inf"):
            raise config_error(
                f"{key}.stall_timeout",
                self.stall_timeout,
                f"must be a number of seconds >= {MIN_STALL_S} (a worker beats each second), or null (off)",
            )
        if self.heartbeat_interval is not None and self.heartbeat_interval < MIN_HEARTBEAT_S:
            raise config_error(
                f"{key}.heartbeat_interval",
                self.heartbeat_interval,
                f"must be a whole number of seconds >= {MIN_HEARTBEAT_S} (the minimum: a shorter one could "
                "take a live trial for dead), or null (no heartbeats)",
            )
        if not 0 <= self.storage_retry < float("inf"):
            raise config_error(
                f"{key}.storage_retry",
                self.storage_retry,
                "must be a number of seconds >= 0 (0: no waiting for a storage that goes away)",
            )
        if not self.directions:
            raise config_error(
                f"{key}.direction", self.direction, "give minimize or maximize, or a list of them"
            )
        for d in self.directions:
            if d not in DIRECTIONS:
                raise config_error(f"{key}.direction", d, "allowed: minimize, maximize (or a list of them)")
        unknown = sorted(set(self.focus) - {"from"})
        if unknown:
            raise config_error(f"{key}.focus.{unknown[0]}", self.focus[unknown[0]], "allowed keys: from")

    @property
    def paused_kept(self) -> int:
        """How many paused checkpoints the study keeps (`paused_budget`)."""
        return paused_budget(self.pause.keep, self.rescue.top_k)

    @property
    def directions(self) -> list[str]:
        """`direction` as a list, one lower-case name per objective."""
        items = list(self.direction) if isinstance(self.direction, list | tuple) else [self.direction]
        return [str(getattr(d, "name", d)).lower() for d in items]
