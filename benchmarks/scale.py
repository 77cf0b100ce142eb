"""Many workers on one study, simulated: trials that train nothing (`benchmarks/scale_app.py` sleeps
`--epoch-s` per epoch and reports each through `sweeplab.report`), so one machine holds as many workers as a
cluster of GPU nodes would run.

For each size W: W / 8 sweeps (at least 1) of `n_jobs` = 8 (or W) workers each, started at once on one study,
as a cluster's nodes would start them; `n_trials` = W x `--trials-per-worker`; the median pruner. Per size:

- start gap: from a trial's creation (the sweep asked it) to its job's first line (p50 / p99);
- report: one `sweeplab.report` call in the job, the pruner's decision included (p50 / p99);
- tell: from the job's return to the trial's completion in the storage (p50 / p99);
- peak connections: PostgreSQL's `pg_stat_activity` rows of the database, polled every 0.2 s;
- transactions per trial-epoch: the database's `xact_commit + xact_rollback` over the study, less this
  script's own polls, divided by the epochs its trials reported (asks, heartbeats, reports, tells, the
  connection pool's pings: everything; `pg_statements.py` sorts them);
- trials per minute against the ideal: counted trials over the study's span (first trial created to last
  finished), against W workers each running trials of the measured mean length back to back;
- errors: lines of the sweeps' and jobs' logs that say "too many", "locked", "Traceback" or that the storage
  could not be reached;
- whether the study ended at exactly `n_trials`, every counted trial with its own params, none left RUNNING.

    python benchmarks/scale.py --postgres postgresql://sweeplab:sweeplab-ci-pw@127.0.0.1:5432/sweeplab_scale \\
        --sizes 8 32 64 128 --sqlite-sizes 8 32 --proxy-sizes 128

"postgresql via proxy": the sweeps and their workers open `grpc://` of one `runners/proxy.py` in front of
the same server (its connections are the proxy's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "benchmarks" / "scale_app.py"
ERRORS = ("too many", "locked", "Traceback", "cannot reach the storage")


@dataclass
class Size:
    backend: str
    workers: int
    sweeps: int
    n_trials: int
    wall: float
    start_gap: list[float]
    report: list[float]
    tell: list[float]
    peak_connections: int | None
    xacts_per_epoch: float | None
    per_minute: float
    ideal_per_minute: float
    errors: int
    exact: bool


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def pg_query(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        return int(conn.execute(sql).fetchone()[0])


XACTS = "select xact_commit + xact_rollback from pg_stat_database where datname = current_database()"
CONNECTIONS = (
    "select count(*) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(url: str, cwd: Path, port: int) -> subprocess.Popen:
    """`runners/proxy.py` serving `url` on 127.0.0.1:`port` (the URL from the environment, as the docs
    advise), once it accepts connections; its lines in `cwd`/proxy.log. The tests start theirs here too."""
    env = {**os.environ, "SWEEPLAB_STORAGE": url, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(ROOT / "runners" / "proxy.py"), "host=127.0.0.1", f"port={port}"]
    log = cwd / "proxy.log"
    with log.open("a") as out:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return server
        if server.poll() is not None:
            raise RuntimeError(f"the storage proxy stopped: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("the storage proxy did not listen within 60 s")


@contextlib.contextmanager
def serving(url: str, cwd: Path) -> Iterator[str]:
    """A storage proxy of `url` on a free local port for the duration: its grpc:// URL."""
    port = free_port()
    server = start_proxy(url, cwd, port)
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_size(work: Path, backend: str, url: str | None, workers: int, args: argparse.Namespace) -> Size:
    sweeps = max(1, workers // args.per_sweep)
    n_jobs = workers // sweeps
    n_trials = workers * args.trials_per_worker
    name = f"scale_{backend.split()[0]}_{workers}_{uuid.uuid4().hex[:6]}"
    cwd = work / name
    cwd.mkdir(parents=True)
    storage = url if url is not None else f"sqlite:///{cwd / 'study.db'}"
    with serving(storage, cwd) if "proxy" in backend else contextlib.nullcontext(storage) as served:
        return measure(cwd, backend, storage, served, name, workers, sweeps, n_jobs, n_trials, args)


def measure(
    cwd: Path,
    backend: str,
    storage: str,
    served: str,
    name: str,
    workers: int,
    sweeps: int,
    n_jobs: int,
    n_trials: int,
    args: argparse.Namespace,
) -> Size:
    """Run the sweeps on `served` (the storage, or a proxy of it) and read the study from `storage`."""
    url = storage if storage.startswith("postgresql") else None
    env = {**os.environ, "SWEEPLAB_DB": served}
    command = [
        sys.executable,
        str(APP),
        "-m",
        "hydra.sweeper.storage=${oc.env:SWEEPLAB_DB}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"epochs={args.epochs}",
        f"epoch_s={args.epoch_s}",
    ]
    before = pg_query(url, XACTS) if url else None
    peak = polls = 0
    started = time.time()
    procs = []
    for i in range(sweeps):
        log = (cwd / f"sweep_{i}.log").open("w")
        procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = started + args.timeout
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        if url:
            with contextlib.suppress(Exception):  # the server is full: the sweeps' own logs say so
                peak = max(peak, pg_query(url, CONNECTIONS))
                polls += 1
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.kill()
    wall = time.time() - started
    after = pg_query(url, XACTS) if url else None

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    running = [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    exact = (
        len(counted) == n_trials and not running and len({t.params["lr"] for t in counted}) == len(counted)
    )
    gaps, reports, tells, lengths, epochs = [], [], [], [], 0
    for t in trials:
        epochs += len(t.intermediate_values)
        out = t.user_attrs.get("output_dir")
        timing = Path(out) / "timing.json" if out else None
        if timing is None or not timing.exists():
            continue
        record = json.loads(timing.read_text())
        gaps.append(record["started"] - t.datetime_start.timestamp())
        reports.extend(record["reports"])
        if t.datetime_complete is not None and t in counted:
            tells.append(t.datetime_complete.timestamp() - record["returned"])
            lengths.append(record["returned"] - record["started"])
    first = min(t.datetime_start for t in trials if t.datetime_start)
    last = max(t.datetime_complete for t in trials if t.datetime_complete)
    span = (last - first).total_seconds()
    mean_length = statistics.mean(lengths) if lengths else float("nan")
    errors = 0
    for log in cwd.rglob("*.log"):
        errors += sum(
            1 for line in log.read_text(errors="replace").splitlines() if any(e in line for e in ERRORS)
        )
    return Size(
        backend=backend,
        workers=workers,
        sweeps=sweeps,
        n_trials=n_trials,
        wall=wall,
        start_gap=gaps,
        report=reports,
        tell=tells,
        peak_connections=peak if url else None,
        xacts_per_epoch=(after - before - polls) / epochs if url and epochs else None,
        per_minute=len(counted) / span * 60,
        ideal_per_minute=workers * 60 / mean_length,
        errors=errors,
        exact=exact,
    )


def row(s: Size) -> str:
    def ms(values: list[float]) -> str:
        return f"{pct(values, 0.5) * 1000:.0f} / {pct(values, 0.99) * 1000:.0f}"

    conns = "-" if s.peak_connections is None else str(s.peak_connections)
    xacts = "-" if s.xacts_per_epoch is None else f"{s.xacts_per_epoch:.1f}"
    return (
        f"| {s.backend} | {s.workers} ({s.sweeps} x {s.workers // s.sweeps}) | {s.n_trials} | {ms(s.start_gap)} | "
        f"{ms(s.report)} | {ms(s.tell)} | {conns} | {xacts} | {s.per_minute:.1f} of {s.ideal_per_minute:.1f} "
        f"({s.per_minute / s.ideal_per_minute:.0%}) | {s.errors} | {'yes' if s.exact else 'NO'} | {s.wall:.0f} s |"
    )


HEADER = (
    "| storage | workers (sweeps x n_jobs) | n_trials | start gap ms p50 / p99 | report ms p50 / p99 | "
    "tell ms p50 / p99 | peak connections | transactions per trial-epoch | trials per minute of ideal | "
    "error lines | exactly n_trials, distinct, none RUNNING | wall |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="a PostgreSQL URL (a database of its own: its counters are read)")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[8, 32, 64, 128], help="workers, on PostgreSQL"
    )
    parser.add_argument("--sqlite-sizes", type=int, nargs="*", default=[8, 32], help="workers, on SQLite")
    parser.add_argument(
        "--proxy-sizes",
        type=int,
        nargs="*",
        default=[128],
        help="workers, on PostgreSQL through runners/proxy.py",
    )
    parser.add_argument("--per-sweep", type=int, default=8, help="workers per sweep (n_jobs)")
    parser.add_argument("--trials-per-worker", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch-s", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    print(
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, Optuna {optuna.__version__}; "
        f"{args.trials_per_worker} trials per worker of {args.epochs} epochs of {args.epoch_s} s",
        flush=True,
    )
    print(HEADER, flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="sweeplab-scale-") as tmp:
        plan = [("sqlite", None, w) for w in args.sqlite_sizes]
        if args.postgres:
            plan += [("postgresql", args.postgres, w) for w in args.sizes]
            plan += [("postgresql via proxy", args.postgres, w) for w in args.proxy_sizes]
        for backend, url, workers in plan:
            size = run_size(Path(tmp), backend, url, workers, args)
            print(row(size), flush=True)
            failed |= not size.exact
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
