"""The smallest size of `benchmarks/scale.py`: 8 workers on one study, on SQLite and (where a server is
given) on PostgreSQL, directly and through a storage proxy, ends at exactly n_trials with every trial distinct, none RUNNING, no error line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

POSTGRES = os.environ.get("SWEEPLAB_TEST_POSTGRES")


@pytest.mark.slow
def test_eight_workers_on_one_study_end_at_n_trials_without_errors_on_sqlite_and_postgresql(tmp_path):
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "scale.py"),
        "--sizes",
        "8",
        "--sqlite-sizes",
        "8",
        "--proxy-sizes",
        "8",
    ]
    command += ["--trials-per-worker", "1", "--epochs", "2", "--epoch-s", "0.5", "--timeout", "300"]
    if POSTGRES:
        command += ["--postgres", POSTGRES]
    elif os.environ.get("SWEEPLAB_REQUIRE_POSTGRES"):
        pytest.fail("SWEEPLAB_REQUIRE_POSTGRES is set but SWEEPLAB_TEST_POSTGRES is not")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| sqlite", "| postgresql"))]
    assert len(rows) == (3 if POSTGRES else 1), result.stdout  # sqlite; postgresql, directly and via a proxy
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "8 (1 x 8)" and cells[9] == "0" and cells[10] == "yes", line


def test_the_statement_log_is_sorted_into_transactions_by_what_they_do_and_who_sent_them(tmp_path):
    log = tmp_path / "postgresql.log"
    lines = []
    for second, pid, statement in [
        (0, 10, "BEGIN"),
        (0, 10, "SELECT trials.trial_id FROM trials WHERE trials.study_id = 1"),
        (0, 10, "COMMIT"),
        (1, 20, ";"),
        (1, 20, "BEGIN"),
        (1, 20, "INSERT INTO trial_intermediate_values (trial_id, step) VALUES (1, 0)"),
        (1, 20, "COMMIT"),
        (2, 10, "select count(*) from pg_stat_activity"),
        (9, 10, "BEGIN"),
        (9, 10, "INSERT INTO trial_heartbeats (trial_id) VALUES (1)"),
        (9, 10, "ROLLBACK"),
    ]:
        lines.append(f"2026-12-06 10:00:0{second}.000 UTC [{pid}] u@db LOG:  statement: {statement}")
    log.write_text("\n".join(lines) + "\n")
    script = ROOT / "benchmarks" / "pg_statements.py"
    result = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]) for line in result.stdout.splitlines()}
    assert ("sweep", "read the study's trials", "1") in rows and ("sweep", "heartbeat", "1") in rows
    assert ("job", "report: an epoch's value", "1") in rows and ("job", "ping (pool_pre_ping)", "1") in rows
    assert "| all | | 4 | 4.0 |" in result.stdout  # the poll is left out
