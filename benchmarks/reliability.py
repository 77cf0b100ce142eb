"""Counts of what can go wrong when sweeps share a study, are killed and resumed: the reliability table.

    python benchmarks/reliability.py [--rounds 5] [--postgres postgresql://user:pw@host/db]

Method: every sweep runs tests/apps/curve.py (a plain Hydra app that reports one value per epoch and is
pruned; a seeded random sampler over a continuous lr), each in its own process, in a fresh directory.
- distinct configurations: 1, 2 and 3 sweeps started together with the same command (n_trials=12), then
  the same command again with n_trials=18; counted: finished trials and distinct params among them.
- kill rounds: in round r, a sweep that grows the study to 6 r trials (0.3 s epochs) is killed with SIGKILL
  at a random moment (seeded), then the same command runs; counted: rounds after which that run ended
  the study at exactly n_trials, with nothing RUNNING or WAITING left.
- "database is locked": 4 sweeps on one SQLite study at once; counted: the phrase in their logs.
- password hits (with --postgres): 2 sweeps on the server, the URL given directly on the command line;
  counted: files under their directories that contain the password.
- server outages (with --postgres, on the local Debian server .ci/postgres starts, as root): a sweep with
  2 workers (n_trials=6, 6 epochs of 0.5 s, no pruning) on a fresh study; once a trial has reported, the
  server is restarted (`pg_ctlcluster ... restart -m fast`) or stopped for 20 s; counted: rounds whose
  sweep exited 0 with exactly n_trials finished trials, nothing RUNNING, and no traceback in its output.
  `--outage-only` measures these rows alone.
- stop signals (n_jobs=2, n_trials=4, 6 epochs of 0.5 s): once a trial has reported, SIGTERM to the sweep's
  process group, or to the sweep alone; counted: rounds that exited 143 with one "sweep stopped by SIGTERM"
  line and no traceback, nothing RUNNING, no worker left, and whose same command then ended the study at
  exactly n_trials. SIGKILL to the sweep alone: rounds whose workers were all gone 5 s later.
- a stopped worker: once a trial has reported, one worker gets SIGSTOP (`stall_timeout=5`); counted: rounds
  whose sweep exited 0 at exactly n_trials with that trial stored FAIL (`stalled`) and re-run.
- bad storage at the start: a file that is not a database, a study file with damaged pages, a read-only
  place (/proc), a directory that cannot be created, a closed port, an unknown host (and a wrong password
  with --postgres); counted: refusals that are one line naming the storage, exit 1, no traceback, the file
  unchanged and no sweep dir made.
  `--faults-only` measures these rows alone.
Stop points (a sweep stopped at each of its storage writes, then resumed) are counted by
tests/test_resilience.py::test_a_sweep_stopped_at_any_storage_write_is_finished_by_the_same_command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sweeplab.search.records import counted  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
CURVE = [sys.executable, str(ROOT / "tests" / "apps" / "curve.py"), "-m", "hydra.sweeper.report=false"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def start(where: Path, *overrides: str, log: str = "sweep.log", session: bool = False) -> subprocess.Popen:
    where.mkdir(parents=True, exist_ok=True)
    out = (where / log).open("a")
    return subprocess.Popen(
        [*CURVE, *overrides],
        cwd=where,
        env=ENV,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=session,
    )


def trials(url: str, name: str = "curve") -> list:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def distinct(base: Path, sweeps: int) -> tuple[int, int]:
    where = base / f"together{sweeps}"
    for n_trials in (12, 18):
        procs = [start(where, f"hydra.sweeper.n_trials={n_trials}", log=f"s{i}.log") for i in range(sweeps)]
        assert all(p.wait() == 0 for p in procs), where
    done = counted(trials(f"sqlite:///{where / 'studies' / 'curve.db'}"))
    return len(done), len({tuple(sorted(t.params.items())) for t in done})


def kill_rounds(base: Path, rounds: int) -> tuple[int, int]:
    """Round r grows the study to 6 * r trials: a sweep killed at a random moment, then the same command."""
    where, rng = base / "kills", random.Random(0)
    url = f"sqlite:///{where / 'studies' / 'curve.db'}"
    survived = 0
    for r in range(1, rounds + 1):
        args = [
            f"hydra.sweeper.n_trials={6 * r}",
            "epochs=4",
            "epoch_s=0.3",
            "hydra.sweeper.heartbeat_interval=5",
        ]
        sweep = start(where, *args)
        time.sleep(rng.uniform(1.5, 5.0))
        sweep.kill()
        sweep.wait()
        assert start(where, *args).wait() == 0, where
        ts = trials(url)
        still_open = [
            t for t in ts if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        ]
        survived += len(counted(ts)) == 6 * r and not still_open
    return survived, rounds


def locked(base: Path) -> int:
    where = base / "four"
    procs = [start(where, "hydra.sweeper.n_trials=40", log=f"s{i}.log") for i in range(4)]
    assert all(p.wait() == 0 for p in procs), where
    return sum((where / f"s{i}.log").read_text().count("database is locked") for i in range(4))


def password_hits(base: Path, url: str) -> int:
    password = make_url(url).password
    name = f"curve_{uuid.uuid4().hex[:8]}"
    where = base / "postgres"
    procs = [
        start(
            where / f"m{i}",
            "hydra.sweeper.n_trials=8",
            f"hydra.sweeper.storage={url}",
            f"hydra.sweeper.study_name={name}",
        )
        for i in range(2)
    ]
    assert all(p.wait() == 0 for p in procs), where
    return sum(password.encode() in p.read_bytes() for p in where.rglob("*") if p.is_file())


def pg_ctl(*args: str) -> None:
    """pg_ctlcluster on the local server (the first cluster pg_lsclusters lists), as root."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    version, cluster = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout.split()[
        :2
    ]
    subprocess.run([*sudo, "pg_ctlcluster", version, cluster, *args], capture_output=True)
    if args[0] in ("start", "restart"):
        for _ in range(60):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0:
                return
            time.sleep(0.5)


def outage_rounds(base: Path, url: str, stop_s: float | None, rounds: int) -> tuple[int, int]:
    """A server restarted (`stop_s` None) or stopped for `stop_s` seconds while a sweep's trials run."""
    ok = 0
    for r in range(rounds):
        name = f"outage_{uuid.uuid4().hex[:8]}"
        where = base / f"outage_{stop_s}_{r}"
        sweep = start(
            where,
            f"hydra.sweeper.storage={url}",
            f"hydra.sweeper.study_name={name}",
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.heartbeat_interval=5",
            "hydra.sweeper.pruner.n_startup_trials=100",
            "epochs=6",
            "epoch_s=0.5",
        )
        try:
            while sweep.poll() is None:  # until a trial has reported
                try:
                    if any(t.intermediate_values for t in trials(url, name)):
                        break
                except Exception:  # the study is not created yet
                    pass
                time.sleep(0.3)
            if stop_s is None:
                pg_ctl("restart", "-m", "fast")
            else:
                pg_ctl("stop", "-m", "fast")
                time.sleep(stop_s)
                pg_ctl("start")
            rc = sweep.wait(timeout=600)
        finally:
            pg_ctl("start")
        ts = trials(url, name)
        clean = "Traceback" not in (where / "sweep.log").read_text()
        running = [t for t in ts if t.state == optuna.trial.TrialState.RUNNING]
        ok += rc == 0 and len(counted(ts)) == 6 and not running and clean
    return ok, rounds


FAULT_ARGS = (
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.n_jobs=2",
    "hydra.sweeper.heartbeat_interval=5",
    "hydra.sweeper.pruner.n_startup_trials=100",
    "epochs=6",
    "epoch_s=0.5",
)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a sweep's forked workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def reported(sweep: subprocess.Popen, url: str) -> None:
    """Wait until one of the sweep's trials has reported an epoch (or the sweep ended)."""
    while sweep.poll() is None:
        try:
            if any(t.intermediate_values for t in trials(url)):
                return
        except Exception:  # the study is not created yet
            pass
        time.sleep(0.2)


def signal_rounds(base: Path, rounds: int, group: bool) -> tuple[int, int]:
    """SIGTERM to the sweep's process group (or the sweep alone) mid-study, then the same command."""
    ok = 0
    for r in range(rounds):
        where = base / f"term_{'group' if group else 'sweep'}_{r}"
        url = f"sqlite:///{where / 'studies' / 'curve.db'}"
        sweep = start(where, *FAULT_ARGS, session=True)
        reported(sweep, url)
        workers = children(sweep.pid)
        (os.killpg if group else os.kill)(sweep.pid, signal.SIGTERM)
        rc = sweep.wait(timeout=120)
        time.sleep(1.0)
        text = (where / "sweep.log").read_text()
        one_line = text.count("sweep stopped by SIGTERM") == 1 and "Traceback" not in text
        running = [t for t in trials(url) if t.state == optuna.trial.TrialState.RUNNING]
        left = [w for w in workers if alive(w)]
        resumed = start(where, *FAULT_ARGS, log="resume.log").wait(timeout=300) == 0
        ok += (
            rc == 143 and one_line and not running and not left and resumed and len(counted(trials(url))) == 4
        )
    return ok, rounds


def orphan_rounds(base: Path, rounds: int) -> tuple[int, int]:
    """SIGKILL to the sweep alone mid-study: are its workers gone 5 s later?"""
    ok = 0
    for r in range(rounds):
        where = base / f"orphans_{r}"
        sweep = start(where, *FAULT_ARGS, session=True)
        reported(sweep, f"sqlite:///{where / 'studies' / 'curve.db'}")
        workers = children(sweep.pid)
        sweep.kill()
        sweep.wait()
        time.sleep(5.0)
        ok += bool(workers) and not any(alive(w) for w in workers)
        for w in workers:  # leave nothing behind, whatever was counted
            with contextlib.suppress(ProcessLookupError):
                os.kill(w, signal.SIGKILL)
    return ok, rounds


def stall_rounds(base: Path, rounds: int) -> tuple[int, int]:
    """One worker stopped with SIGSTOP mid-study, stall_timeout=5."""
    ok = 0
    for r in range(rounds):
        where = base / f"stall_{r}"
        url = f"sqlite:///{where / 'studies' / 'curve.db'}"
        sweep = start(where, *FAULT_ARGS, "hydra.sweeper.stall_timeout=5", session=True)
        reported(sweep, url)
        workers = children(sweep.pid)
        if workers:
            os.kill(workers[0], signal.SIGSTOP)
        rc = sweep.wait(timeout=300)
        ts = trials(url)
        stalled = [t for t in ts if t.user_attrs.get("fail_reason") == "stalled"]
        ok += rc == 0 and len(counted(ts)) == 4 and len(stalled) == 1
    return ok, rounds


def bad_starts(base: Path, postgres: str | None) -> tuple[int, int]:
    """Each bad storage at the start: one line, exit 1, nothing written."""
    where = base / "bad"
    where.mkdir(parents=True, exist_ok=True)
    junk = where / "junk.db"
    junk.write_bytes(os.urandom(8192))
    good = base / "damaged"
    assert start(good, "hydra.sweeper.n_trials=3").wait() == 0
    damaged = good / "studies" / "curve.db"
    with damaged.open("r+b") as f:
        for offset in range(3 * 4096, damaged.stat().st_size - 4096, 2 * 4096):
            f.seek(offset + 100)
            f.write(os.urandom(2000))
    urls = [
        f"sqlite:///{junk}",
        f"sqlite:///{damaged}",
        "sqlite:////proc/sweeplab-bench.db",
        "sqlite:////proc/no-such-dir/study.db",
        "postgresql://user:secret@127.0.0.1:9/optuna",
        "postgresql://user:secret@no-such-host.invalid/optuna",
    ]
    if postgres:
        urls.append(make_url(postgres).set(password="wrong-password").render_as_string(hide_password=False))
    ok = 0
    for url in urls:
        files = {p: p.read_bytes() for p in (junk, damaged)}
        result = subprocess.run(
            [*CURVE, f"hydra.sweeper.storage={url}"], cwd=where, env=ENV, capture_output=True, text=True
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        ok += (
            result.returncode == 1
            and bool(lines)
            and lines[0].startswith("hydra.sweeper.storage=")
            and "Traceback" not in result.stderr
            and "secret" not in result.stderr
            and all(p.read_bytes() == b for p, b in files.items())
            and not (where / "multirun").exists()
        )
    return ok, len(urls)


def faults(base: Path, rounds: int, postgres: str | None) -> None:
    """The stop-signal, stopped-worker and bad-storage rows (see the module's docstring)."""
    for group, who in ((True, "the process group"), (False, "the sweep alone")):
        ok, n = signal_rounds(base, rounds, group)
        print(
            f"| SIGTERM to {who} mid-study (2 workers): exit 143, one line, nothing RUNNING, no worker left, "
            f"then the same command at exactly n_trials | {ok} of {n} |"
        )
    ok, n = orphan_rounds(base, rounds)
    print(f"| SIGKILL to the sweep alone: rounds whose workers were all gone 5 s later | {ok} of {n} |")
    ok, n = stall_rounds(base, rounds)
    print(
        f"| a worker stopped with SIGSTOP (stall_timeout=5): exit 0 at exactly n_trials, the trial stored "
        f"FAIL (stalled) and re-run | {ok} of {n} |"
    )
    ok, n = bad_starts(base, postgres)
    print(f"| bad storage at the start: one line, exit 1, nothing written | {ok} of {n} kinds |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default=os.environ.get("SWEEPLAB_TEST_POSTGRES"))
    parser.add_argument("--outage-rounds", type=int, default=3)
    parser.add_argument("--outage-only", action="store_true", help="only the server outage rows")
    parser.add_argument(
        "--faults-only", action="store_true", help="only the signal, stall and bad-storage rows"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print("| measure | count |\n|---|---|")
        if args.outage_only:
            outages(base, args.postgres, args.outage_rounds)
            return
        if args.faults_only:
            faults(base, args.rounds, args.postgres)
            return
        for sweeps in (1, 2, 3):
            finished, unique = distinct(base, sweeps)
            print(
                f"| distinct configurations, {sweeps} sweep(s) together then resumed | {unique} of {finished} finished |"
            )
        survived, rounds = kill_rounds(base, args.rounds)
        print(
            f"| SIGKILL rounds after which the same command ended at exactly n_trials, nothing left open | {survived} of {rounds} |"
        )
        print(f'| "database is locked" in the logs of 4 sweeps on one SQLite study | {locked(base)} |')
        if args.postgres:
            print(
                f"| files holding the PostgreSQL password after 2 sweeps | {password_hits(base, args.postgres)} |"
            )
        else:
            print("| files holding the PostgreSQL password | not measured: no --postgres URL |")
        outages(base, args.postgres, args.outage_rounds)
        faults(base, args.rounds, args.postgres)


def outages(base: Path, url: str | None, rounds: int) -> None:
    """The server outage rows (see the module's docstring), or why they are not measured."""
    if not url:
        print("| PostgreSQL restarted / stopped mid-study | not measured: no --postgres URL |")
        return
    for stop_s, what in ((None, "restarted"), (20.0, "stopped 20 s")):
        ok, n = outage_rounds(base, url, stop_s, rounds)
        print(
            f"| PostgreSQL {what} mid-study (2 workers): sweeps exiting 0 at exactly n_trials, nothing RUNNING, "
            f"no traceback | {ok} of {n} |"
        )


if __name__ == "__main__":
    main()
