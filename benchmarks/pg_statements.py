"""What a study's transactions on PostgreSQL are: a server log of every statement, sorted by what each
transaction does and by who sent it (the sweep's long-lived connection, or a trial's job).

Method: the server logs every statement of the study's database (`ALTER DATABASE <db> SET log_statement =
'all'`, as a superuser; `log_line_prefix` with `[%p]`, the backend's pid, as Debian's default has). A
transaction is the statements of one backend from BEGIN to COMMIT or ROLLBACK, named by the tables it
touches; a backend that sends statements over more than 60% of the run is a sweep's, the others are jobs'.
An empty statement outside a transaction is SQLAlchemy's `pool_pre_ping` (a liveness check on each
connection checkout, which Optuna turns on too); `benchmarks/scale.py`'s own polls are left out.

    sudo -u postgres psql -c "ALTER DATABASE sweeplab_scale SET log_statement = 'all'"
    python benchmarks/scale.py --postgres postgresql://sweeplab:***@127.0.0.1:5432/sweeplab_scale \\
        --sizes 8 --sqlite-sizes --proxy-sizes --epoch-s 2
    python benchmarks/pg_statements.py /var/log/postgresql/postgresql-15-main.log --since '2026-12-06 16:42'
"""

from __future__ import annotations

import argparse
import collections
import re
from datetime import datetime
from pathlib import Path

ENTRY = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \w+ \[(\d+)\] .*?LOG:  (?:statement|execute [^:]*): (.*)", re.S
)
# (what a transaction does, a pattern of its statements), first match wins
KINDS = (
    ("heartbeat", r"trial_heartbeats"),
    ("report: an epoch's value", r"(insert into|update) trial_intermediate_values"),
    ("trial user attribute write", r"(insert into|update) trial_user_attributes"),
    ("trial system attribute write", r"(insert into|update) trial_system_attributes"),
    ("ask: create a trial", r"insert into trials"),
    ("ask: a param", r"insert into trial_params"),
    ("tell: a value", r"insert into trial_values"),
    ("state change", r"update trials set"),
    ("connection set-up", r"pg_type|pg_catalog\.version"),
    ("read the study's trials", r"from trials .*study_id"),
    ("read one trial", r"from trials"),
    ("read the study", r"from studies|study_directions|version_info|alembic"),
)


def kind(statements: list[str]) -> str:
    text = " ".join(statements).lower()
    return next((name for name, pattern in KINDS if re.search(pattern, text, re.S)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the server's log file")
    parser.add_argument("--since", help="the first time to read (YYYY-MM-DD HH:MM[:SS])")
    args = parser.parse_args()
    since = datetime.fromisoformat(args.since) if args.since else datetime.min
    entries = []
    for raw in re.split(r"\n(?=\d{4}-\d\d-\d\d )", Path(args.log).read_text(errors="replace")):
        m = ENTRY.match(raw)
        if not m or "pg_stat_" in m.group(3):
            continue
        at = datetime.fromisoformat(m.group(1))
        if at >= since:
            entries.append((at, m.group(2), m.group(3).strip()))
    if not entries:
        raise SystemExit(
            "no statements in the log since then: is log_statement = 'all' set for the database?"
        )
    spans: dict[str, list[datetime]] = {}
    for at, pid, _ in entries:
        spans.setdefault(pid, [at, at])[1] = at
    run_s = (entries[-1][0] - entries[0][0]).total_seconds()
    sweeps = {pid for pid, (a, b) in spans.items() if (b - a).total_seconds() > 0.6 * run_s}
    open_tx: dict[str, list[str]] = {}
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for _, pid, statement in entries:
        who = "sweep" if pid in sweeps else "job"
        if statement == "BEGIN":
            open_tx[pid] = []
        elif statement in ("COMMIT", "ROLLBACK"):
            if pid in open_tx:
                counts[(who, kind(open_tx.pop(pid)))] += 1
        elif pid in open_tx:
            open_tx[pid].append(statement)
        elif statement == ";":
            counts[(who, "ping (pool_pre_ping)")] += 1
    epochs = counts[("job", "report: an epoch's value")]
    print(f"{run_s:.0f} s, {len(spans)} connections ({len(sweeps)} sweeps'), {epochs} epochs reported\n")
    print("| who | what | transactions | per trial-epoch |\n|---|---|---|---|")
    for (who, what), n in sorted(counts.items(), key=lambda item: (item[0][0] != "sweep", -item[1])):
        print(f"| {who} | {what} | {n} | {n / max(epochs, 1):.1f} |")
    total = sum(counts.values())
    print(f"| all | | {total} | {total / max(epochs, 1):.1f} |")


if __name__ == "__main__":
    main()
