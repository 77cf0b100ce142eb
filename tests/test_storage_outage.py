"""A storage that goes away mid-study (a PostgreSQL restart or stop, a full disk) is waited out: the sweep
and its jobs retry with backoff for `hydra.sweeper.storage_retry` seconds, say so once, and the study ends
as if nothing happened; past the window the sweep stops with one line."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy import exc as sa

from sweeplab.errors import SweeplabError
from sweeplab.search.liveness import dead_trials
from sweeplab.search.optuna_access import rdb_backend, storage_of
from sweeplab.search.outage import Outage, RetryingStorage, StorageUnreachable, outage_cause
from sweeplab.search.records import ATTR_HOST, ATTR_PID, counted
from sweeplab.search.schema import SweeplabSweeperConf
from sweeplab.search.storage import open_storage
from tests.conftest import ROOT, age_trials

CURVE = ROOT / "tests" / "apps" / "curve.py"
POSTGRES = os.environ.get("SWEEPLAB_TEST_POSTGRES")
LABEL = "postgresql://sweeplab:***@127.0.0.1:5432/sweeplab"


def _down(message: str = "the database system is shutting down") -> Exception:
    """What Optuna raises when the server goes away: SQLAlchemy's OperationalError in its wrapper."""
    try:
        try:
            raise sa.OperationalError("SELECT 1", {}, Exception(message))
        except sa.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("... e.g. exceeding max length.") from e
    except optuna.exceptions.StorageInternalError as wrapped:
        return wrapped


class Flaky:
    """A storage whose calls fail with `error` the first `fails` times, then answer."""

    def __init__(self, fails: int, error: Exception | None = None) -> None:
        self.fails, self.error, self.calls = fails, error or _down(), 0
        self.lock = threading.Lock()

    def get_trial(self, trial_id: int) -> str:
        with self.lock:
            self.calls += 1
            if self.fails:
                self.fails -= 1
                raise self.error
        return f"trial {trial_id}"


def _retrying(delegate: Flaky, window_s: float = 10.0) -> RetryingStorage:
    return RetryingStorage(delegate, Outage(LABEL, window_s, first_wait_s=0.01, max_wait_s=0.05))


def _said(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sweeplab.sweep" and words in r.getMessage()]


# -- the retrying storage ----------------------------------------------------------------------------------


def test_a_storage_that_fails_a_while_is_waited_out_said_once_going_and_once_back(caplog):
    caplog.set_level(logging.WARNING, logger="sweeplab.sweep")
    flaky = Flaky(fails=12)
    storage = _retrying(flaky)
    threads = [threading.Thread(target=storage.get_trial, args=(i,)) for i in range(3)]
    for t in threads:  # a heartbeat thread and the loop hitting the same outage
        t.start()
    assert storage.get_trial(7) == "trial 7"
    for t in threads:
        t.join()
    assert flaky.calls > 12
    (waiting,) = _said(caplog, "unreachable")
    assert waiting == (
        f"storage {LABEL} unreachable (Exception: the database system is shutting down): waiting up to 10 s, "
        "retrying"
    )
    (back,) = _said(caplog, "back after")
    assert back.startswith(f"storage {LABEL} back after ")
    assert not storage.outage.gave_up


def test_a_storage_that_fails_again_soon_after_it_came_back_is_said_once(caplog):
    """A full disk lets some writes through: the same outage, not a new pair of lines each time."""
    caplog.set_level(logging.WARNING, logger="sweeplab.sweep")
    flaky = Flaky(fails=2)
    storage = _retrying(flaky)
    for i in range(3):
        assert storage.get_trial(i) == f"trial {i}"
        flaky.fails = 2
    assert len(_said(caplog, "unreachable")) == 1 and len(_said(caplog, "back after")) == 1


class FullDisk(Flaky):
    """A SQLite storage on a full disk: its writes fail the first `fails` times, its reads answer throughout."""

    def __init__(self, fails: int) -> None:
        super().__init__(
            fails, sa.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: str) -> None:
        self.get_trial(trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict:
        return {}


def test_a_full_disk_is_not_said_back_while_only_reads_work(caplog):
    caplog.set_level(logging.WARNING, logger="sweeplab.sweep")
    disk = FullDisk(fails=30)
    storage = _retrying(disk)
    writer = threading.Thread(target=storage.set_trial_user_attr, args=(1, "k", "v"))
    writer.start()
    while not _said(caplog, "unreachable"):
        time.sleep(0.01)
    while writer.is_alive():  # the sweep reads on (trials, attributes) while its write waits for the disk
        assert storage.get_trial_user_attrs(1) == {}
        assert not _said(caplog, "back after"), "said back while the disk was still full"
        time.sleep(0.01)
    assert disk.fails == 0
    (back,) = _said(caplog, "back after")  # once the write went through
    assert not back.endswith("back after 0 s")


def test_past_its_window_a_storage_gives_up_with_one_line_and_then_tries_each_call_once(caplog):
    flaky = Flaky(fails=10**6)
    storage = _retrying(flaky, window_s=0.3)
    started = time.monotonic()
    with pytest.raises(SweeplabError) as gone:
        storage.get_trial(1)
    assert 0.3 <= time.monotonic() - started < 2
    message = str(gone.value)
    assert "\n" not in message and isinstance(gone.value, StorageUnreachable)
    assert LABEL in message and "0.3 s" in message and "shutting down" in message
    assert message.endswith("run the same command to resume")
    # closing the sweep's trials after giving up: each call tried once, no second window
    calls, started = flaky.calls, time.monotonic()
    with pytest.raises(StorageUnreachable):
        storage.get_trial(2)
    assert flaky.calls == calls + 1 and time.monotonic() - started < 0.2
    flaky.fails = 0  # back: calls answer again, and a later outage gets its whole window
    assert storage.get_trial(3) == "trial 3"
    assert not storage.outage.gave_up


def test_a_window_of_zero_retries_nothing():
    flaky = Flaky(fails=1)
    with pytest.raises(optuna.exceptions.StorageInternalError):
        _retrying(flaky, window_s=0).get_trial(1)
    assert flaky.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        sa.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
        sa.ProgrammingError("SELECT", {}, Exception("syntax error")),
        sa.DatabaseError("SELECT", {}, sqlite3.DatabaseError("file is not a database")),
        sa.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: trials")),
        optuna.exceptions.UpdateFinishedTrialError("trial 3 has already finished"),
        optuna.exceptions.DuplicatedStudyError("study exists"),
        KeyError("no trial 9"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_that_is_not_an_outage_is_raised_at_once(error):
    flaky = Flaky(fails=1, error=error)
    with pytest.raises(type(error)):
        _retrying(flaky).get_trial(1)
    assert flaky.calls == 1


@pytest.mark.parametrize(
    "error",
    [
        _down(),
        sa.OperationalError("SELECT", {}, sqlite3.OperationalError("database or disk is full")),
        sa.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")),
        sa.InterfaceError("SELECT", {}, Exception("connection already closed")),
        sa.DBAPIError("SELECT", {}, Exception("server closed the connection"), connection_invalidated=True),
        sa.DisconnectionError("gone"),
        sa.InvalidatePoolError("gone"),
        sa.PendingRollbackError("Can't reconnect until invalid transaction is rolled back."),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(getattr(e, "orig", e))[:20],
)
def test_an_unreachable_or_busy_storage_counts_as_an_outage(error):
    assert outage_cause(error) is not None


def test_storage_retry_is_a_sweeper_key_of_seconds_at_least_zero():
    assert SweeplabSweeperConf().storage_retry == 600
    assert SweeplabSweeperConf(storage_retry=0).storage_retry == 0
    with pytest.raises(SweeplabError, match=r"hydra.sweeper.storage_retry=-1"):
        SweeplabSweeperConf(storage_retry=-1)


# -- a real SQLite file that is full for a while ---------------------------------------------------------


def test_a_sqlite_file_whose_disk_is_full_for_a_while_is_waited_out(tmp_path, caplog):
    """The disk is "full" through SQLite's page limit, set on every connection the engine makes (the test's
    own hook: nothing in sweeplab or Optuna is patched); raising it again is the disk freed."""
    caplog.set_level(logging.WARNING, logger="sweeplab.sweep")
    storage = open_storage(f"sqlite:///{tmp_path / 'full.db'}", retry_s=30)
    study = optuna.create_study(study_name="full", storage=storage)
    trial = study.ask()
    engine = rdb_backend(study).engine
    full = threading.Event()
    full.set()

    @event.listens_for(engine, "connect")
    def _limit(dbapi_connection, _record):
        if full.is_set():  # no page beyond those the file has
            dbapi_connection.execute("PRAGMA max_page_count = 1")

    engine.dispose()

    def free_the_disk():
        time.sleep(1.5)
        full.clear()
        engine.dispose()

    threading.Thread(target=free_the_disk).start()
    started = time.monotonic()
    storage_of(study).set_trial_user_attr(trial._trial_id, "blob", "x" * 200_000)
    assert time.monotonic() - started >= 1.0
    assert study.trials[0].user_attrs["blob"] == "x" * 200_000
    (waiting,) = _said(caplog, "unreachable")
    assert "database or disk is full" in waiting and "waiting up to 30 s" in waiting
    assert len(_said(caplog, "back after")) == 1


# -- heartbeats after an outage --------------------------------------------------------------------------


def test_after_an_outage_stale_heartbeats_do_not_kill_trials_until_a_grace_period_has_passed(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1)
    study = optuna.create_study(study_name="hb", storage=storage)
    elsewhere = study.ask()
    storage.record_heartbeat(elsewhere._trial_id)
    storage.set_trial_user_attr(elsewhere._trial_id, ATTR_HOST, "another-machine")
    gone_here = study.ask()
    storage.record_heartbeat(gone_here._trial_id)
    dead_pid = _a_pid_that_is_gone()
    storage.set_trial_user_attr(gone_here._trial_id, ATTR_HOST, os.uname().nodename)
    storage.set_trial_user_attr(gone_here._trial_id, ATTR_PID, dead_pid)
    age_trials(tmp_path / "hb.db", 10)  # both heartbeats are stale (grace period: 2 s) ...
    flaky = Flaky(fails=1)
    storage.outage.call(flaky.get_trial, 0)  # ... and this process just saw the storage go and come back
    # a sweep elsewhere could not write its heartbeats either: not dead yet; a gone owner here still is
    assert list(dead_trials(study)) == [gone_here._trial_id]
    storage.outage.clock = lambda: time.monotonic() + 2.2  # the storage has been back for a grace period
    assert set(dead_trials(study)) == {elsewhere._trial_id, gone_here._trial_id}


def _a_pid_that_is_gone() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# -- whole sweeps: a PostgreSQL server restarted or stopped, a full disk -----------------------------------


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen, Path]:
    log = cwd / "sweep.log"
    out = log.open("w")
    process = subprocess.Popen(
        [sys.executable, str(CURVE), "-m", "hydra.sweeper.report=false", *args],
        cwd=cwd,
        env=_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return process, log


def _wait_for_running(url: str, name: str, sweep: subprocess.Popen, timeout: float = 120) -> None:
    """Until the study has a trial that has reported (its job trains), or fail with the sweep's exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before its trials ran"
        with contextlib.suppress(KeyError, Exception):
            trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                return
        time.sleep(0.3)
    raise AssertionError("no trial started")


def _sweep_args(url: str, name: str, n_trials: int) -> list[str]:
    return [
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.heartbeat_interval=5",
        "hydra.sweeper.pruner.n_startup_trials=100",  # no pruning: each trial runs its epochs
        "epochs=6",
        "epoch_s=0.5",
    ]


def _ended_cleanly(sweep: subprocess.Popen, log: Path, url: str, name: str, n_trials: int) -> str:
    rc = sweep.wait(timeout=300)
    output = log.read_text()
    assert rc == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    assert len(counted(trials)) == n_trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    return output


def _pg(*args: str) -> subprocess.CompletedProcess:
    """pg_ctlcluster on the local server the CI started (.ci/postgres), as root."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    version, cluster = clusters.split()[:2]
    return subprocess.run([*sudo, "pg_ctlcluster", version, cluster, *args], capture_output=True, text=True)


def _pg_up() -> None:
    _pg("start")  # "already running" is fine
    for _ in range(60):
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError("PostgreSQL did not come back")


needs_postgres = pytest.mark.skipif(
    not POSTGRES and not os.environ.get("SWEEPLAB_REQUIRE_POSTGRES"),
    reason="no PostgreSQL server: .ci/postgres starts one; then set SWEEPLAB_TEST_POSTGRES to its URL",
)


@pytest.mark.slow
@needs_postgres
def test_storage_calls_from_several_threads_ride_out_three_server_stops(tmp_path):
    """A job's threads (reports, attrs, heartbeats, the pruner reading all trials) share one storage; the
    connections a stop kills surface as several errors (refused, shut down, PendingRollbackError in Optuna's
    `_get_trials` fallback), each of which must be waited out, not raised."""
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("the test stops the server with pg_ctlcluster (Debian's PostgreSQL, as .ci/postgres)")
    assert POSTGRES, "SWEEPLAB_REQUIRE_POSTGRES is set: set SWEEPLAB_TEST_POSTGRES too"
    storage = open_storage(POSTGRES, heartbeat_interval=5)
    study = optuna.create_study(study_name=f"threads_{uuid.uuid4().hex[:8]}", storage=storage)
    trial_id = study.ask()._trial_id
    raised: list[BaseException] = []
    done = threading.Event()
    calls = {
        "report": lambda i: storage.set_trial_intermediate_value(trial_id, i, 0.5),
        "attr": lambda i: storage.set_trial_user_attr(trial_id, "step", i),
        "heartbeat": lambda i: storage.record_heartbeat(trial_id),
        "all trials": lambda i: storage.get_all_trials(study._study_id),
    }

    def hammer(call) -> None:
        i = 0
        while not done.is_set():
            i += 1
            try:
                call(i)
            except BaseException as exc:  # noqa: BLE001 - any escape is the failure
                raised.append(exc)
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=hammer, args=(call,), daemon=True) for call in calls.values()]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            time.sleep(2)
            _pg("stop", "-m", "fast")
            time.sleep(3)
            _pg_up()
        time.sleep(2)
    finally:
        done.set()
        _pg_up()
    for thread in threads:
        thread.join(timeout=120)
    assert not raised, [f"{type(e).__name__}: {e} <- {e.__cause__!r}" for e in raised]


@pytest.mark.slow
@needs_postgres
@pytest.mark.parametrize("outage", ["restart", "stop 20 s"])
def test_a_postgresql_server_restarted_or_stopped_mid_study_is_waited_out(tmp_path, outage):
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("the test restarts the server with pg_ctlcluster (Debian's PostgreSQL, as .ci/postgres)")
    assert POSTGRES, "SWEEPLAB_REQUIRE_POSTGRES is set: set SWEEPLAB_TEST_POSTGRES too"
    name = f"outage_{uuid.uuid4().hex[:8]}"
    n_trials = 6
    sweep, log = _start(_sweep_args(POSTGRES, name, n_trials), tmp_path)
    try:
        _wait_for_running(POSTGRES, name, sweep)
        if outage == "restart":
            assert _pg("restart", "-m", "fast").returncode == 0
        else:
            assert _pg("stop", "-m", "fast").returncode == 0
            time.sleep(20)
            _pg_up()
        output = _ended_cleanly(sweep, log, POSTGRES, name, n_trials)
    finally:
        _pg_up()
        if sweep.poll() is None:
            sweep.kill()
    waits = [line for line in output.splitlines() if "unreachable (" in line]
    # a restart may pass between two calls of the sweep (its workers then see it); a 20 s stop cannot
    assert len(waits) == 1 if outage.startswith("stop") else len(waits) <= 1, output[-3000:]
    assert all("sweeplab:***@" in line and "sweeplab-ci-pw" not in line for line in waits)
    if waits:
        assert len([line for line in output.splitlines() if " back after " in line]) == 1


@pytest.mark.slow
@needs_postgres
@pytest.mark.parametrize("n_jobs", [2, 1])  # trials in workers, or in the sweep's own process
def test_a_server_down_past_storage_retry_stops_the_sweep_in_one_line_and_the_same_command_resumes(
    tmp_path, n_jobs
):
    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("the test stops the server with pg_ctlcluster (Debian's PostgreSQL, as .ci/postgres)")
    assert POSTGRES, "SWEEPLAB_REQUIRE_POSTGRES is set: set SWEEPLAB_TEST_POSTGRES too"
    name = f"outage_{uuid.uuid4().hex[:8]}"
    n_trials = 4
    # heartbeats a minute apart, as by default: the sweep itself meets the outage only when its jobs report it
    args = [
        *_sweep_args(POSTGRES, name, n_trials),
        "hydra.sweeper.storage_retry=8",
        "hydra.sweeper.heartbeat_interval=60",
        f"hydra.sweeper.n_jobs={n_jobs}",
    ]
    sweep, log = _start(args, tmp_path)
    try:
        _wait_for_running(POSTGRES, name, sweep)
        assert _pg("stop", "-m", "fast").returncode == 0
        stopped = time.monotonic()
        rc = sweep.wait(timeout=180)
        took = time.monotonic() - stopped
    finally:
        _pg_up()
        if sweep.poll() is None:
            sweep.kill()
    output = log.read_text()
    assert rc == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    gave_up = [line for line in output.splitlines() if "gave up (hydra.sweeper.storage_retry=8)" in line]
    assert gave_up and all("sweeplab:***@" in line and "sweeplab-ci-pw" not in line for line in gave_up)
    assert "run the same command to resume" in gave_up[-1]
    # one window (the jobs' or the sweep's, whichever waits first) and a short grace, not one after another
    assert took < 8 + 6, (took, output[-3000:])  # 17 s when the sweep waited a window of its own after
    # the console said the jobs were waiting, before the sweep gave up
    said = [i for i, line in enumerate(output.splitlines()) if "cannot reach the storage: " in line]
    assert said and said[0] < output.splitlines().index(gave_up[0]), output[-3000:]
    # the closing line names every trial the sweep left RUNNING
    left = optuna.load_study(study_name=name, storage=POSTGRES).get_trials(deepcopy=False)
    running = sorted(t.number for t in left if t.state == TrialState.RUNNING)
    closing = [line for line in output.splitlines() if "stay RUNNING there" in line]
    assert running and closing and f"trials {running} stay RUNNING there" in closing[-1], output[-3000:]
    (tmp_path / "again").mkdir()
    resumed, again = _start(args, tmp_path / "again")
    _ended_cleanly(resumed, again, POSTGRES, name, n_trials)


@pytest.mark.slow
def test_a_sqlite_study_on_a_disk_that_fills_up_for_a_while_finishes(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root): {mounted.stderr.decode().strip()}")
    sweep = None
    try:
        url = f"sqlite:///{small / 'study.db'}"
        name = "full"
        n_trials = 6
        sweep, log = _start(_sweep_args(url, name, n_trials), tmp_path)
        _wait_for_running(url, name, sweep)
        ballast = small / "ballast"
        # until the disk is full; closing the file may fail too (its buffer cannot be written either)
        with contextlib.suppress(OSError), ballast.open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        time.sleep(8)
        ballast.unlink()
        output = _ended_cleanly(sweep, log, url, name, n_trials)
        waits = [line for line in output.splitlines() if "unreachable (" in line]
        assert len(waits) <= 1 and all("database or disk is full" in line for line in waits), output[-3000:]
        jobs = [p.read_text() for p in tmp_path.glob("multirun/*/*/*/worker.log")]
        assert any(
            "database or disk is full): waiting up to 600 s" in text for text in jobs
        )  # reports waited
    finally:
        if sweep is not None and sweep.poll() is None:
            sweep.kill()
            sweep.wait()
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_sqlite_study_whose_write_ahead_log_is_damaged_mid_study_is_one_line_naming_the_file(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="c", storage=open_storage(url, heartbeat_interval=None, retry_s=5))
    for _ in range(20):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, 1.0)
    wal = tmp_path / "s.db-wal"  # where a running study's latest pages are
    with wal.open("r+b") as f:  # random bytes over the log's frames, its header kept
        f.seek(32)
        f.write(os.urandom(wal.stat().st_size))
    with pytest.raises(SweeplabError) as raised:
        study.tell(study.ask(), 1.0)
    assert str(raised.value) == (
        f"storage {url} is corrupt (database disk image is malformed): the sweep stopped and wrote nothing more "
        f"to it; restore the file from a copy, or check it with: sqlite3 {tmp_path / 's.db'} 'PRAGMA integrity_check'"
    )
