"""A storage that cannot hold the study is refused at the start in one line that names it (password masked)
and says what to do, before anything is written; a trial that ran out of memory says memory."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path

import optuna
import pytest
import torch

from sweeplab.errors import SweeplabError, failure
from sweeplab.search.optuna_access import rdb_backend
from sweeplab.search.storage import open_storage
from tests.conftest import run_cli

CURVE = "tests/apps/curve.py"


def _study_file(where: Path) -> Path:
    """A real study's SQLite file (3 trials of the curve app)."""
    result = run_cli(["-m", "hydra.sweeper.report=false", "hydra.sweeper.n_trials=3"], where, script=CURVE)
    assert result.returncode == 0, result.stderr[-2000:]
    return where / "studies" / "curve.db"


def _damage_pages(path: Path) -> None:
    """Overwrite the middle of every other page after the first few: the header stays, the b-trees break."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        for offset in range(3 * 4096, size - 4096, 2 * 4096):
            f.seek(offset + 100)
            f.write(os.urandom(2000))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refusal(url: str) -> str:
    with pytest.raises(SweeplabError) as info:
        open_storage(url)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"hydra.sweeper.storage='{url}': cannot open it: ")
    return message


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path):
    junk = tmp_path / "study.db"
    junk.write_bytes(os.urandom(8192))
    before = _digest(junk)
    assert "it is not a SQLite database" in _refusal(f"sqlite:///{junk}")
    assert _digest(junk) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db"]  # no -wal, no -shm


@pytest.mark.slow
def test_a_study_file_with_damaged_pages_is_refused_with_how_to_recover_it(tmp_path):
    study = _study_file(tmp_path)
    _damage_pages(study)
    before = _digest(study)
    message = _refusal(f"sqlite:///{study}")
    assert "malformed" in message and ".recover" in message
    assert "exceeding max length" not in message
    assert _digest(study) == before


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, a read-only place even for root")
def test_a_read_only_place_is_refused(tmp_path):
    assert "use a writable directory" in _refusal("sqlite:////proc/sweeplab-test.db")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, where no directory can be created")
def test_a_directory_that_cannot_be_created_is_refused(tmp_path):
    message = _refusal("sqlite:////proc/no-such-dir/study.db")
    assert "cannot create the directory /proc/no-such-dir" in message


def test_a_missing_directory_that_can_be_created_is_created(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'dir' / 'study.db'}"
    open_storage(url)
    assert (tmp_path / "new" / "dir" / "study.db").is_file()


def test_an_unknown_host_is_one_line_that_says_so():
    with pytest.raises(SweeplabError) as info:
        open_storage("postgresql://user:secret@no-such-host.invalid:5432/optuna")
    message = str(info.value)
    assert "secret" not in message and "user:***@" in message
    assert "the host name is unknown" in message


@pytest.mark.slow
def test_a_sweep_on_a_damaged_study_stops_in_one_line_and_makes_no_sweep_dir(tmp_path):
    study = _study_file(tmp_path)
    _damage_pages(study)
    before = _digest(study)
    multirun = sorted((tmp_path / "multirun").rglob("*"))
    result = run_cli(["-m", "hydra.sweeper.report=false", "hydra.sweeper.n_trials=6"], tmp_path, script=CURVE)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("hydra.sweeper.storage=") and "malformed" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert _digest(study) == before
    assert sorted((tmp_path / "multirun").rglob("*")) == multirun


@pytest.mark.parametrize(
    "raised",
    [
        RuntimeError("could not create a primitive"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
        MemoryError(),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)
def test_a_trial_that_ran_out_of_memory_is_stored_with_a_reason_that_says_memory(raised):
    said = failure(raised)
    assert "Memory" in said.split(":")[0]
    assert "batch size" in said


def test_an_error_caused_by_running_out_of_memory_says_memory():
    try:
        try:
            raise MemoryError
        except MemoryError as inner:
            raise RuntimeError("DataLoader worker exited unexpectedly") from inner
    except RuntimeError as outer:
        assert failure(outer).startswith("OutOfMemory: RuntimeError: DataLoader worker exited unexpectedly")


def test_other_failures_keep_their_own_words():
    assert failure(ValueError("bad value")) == "ValueError: bad value"


POSTGRES = os.environ.get("SWEEPLAB_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(
    not POSTGRES and not os.environ.get("SWEEPLAB_REQUIRE_POSTGRES"),
    reason="no PostgreSQL server: .ci/postgres starts one; then set SWEEPLAB_TEST_POSTGRES to its URL",
)


@needs_postgres
def test_a_server_with_no_connection_left_is_one_line_that_says_how_many_a_study_holds():
    assert POSTGRES, "SWEEPLAB_REQUIRE_POSTGRES is set but SWEEPLAB_TEST_POSTGRES is not"
    full = POSTGRES.replace("//sweeplab:", "//sweeplab_full:", 1)  # CONNECTION LIMIT 0 (.ci/postgres)
    with pytest.raises(SweeplabError) as info:
        open_storage(full)
    message = str(info.value)
    assert "\n" not in message and "sweeplab-ci-pw" not in message
    assert message.startswith("hydra.sweeper.storage='postgresql://sweeplab_full:***@")
    assert "too many connections for role" in message
    assert "no connection left" in message and "one per worker and two per sweep" in message


@needs_postgres
def test_a_process_keeps_one_server_connection_however_many_of_its_threads_used_the_storage():
    assert POSTGRES, "SWEEPLAB_REQUIRE_POSTGRES is set but SWEEPLAB_TEST_POSTGRES is not"
    study = optuna.create_study(study_name=f"pool_{uuid.uuid4().hex[:8]}", storage=open_storage(POSTGRES))
    engine = rdb_backend(study).engine
    inside = threading.Barrier(4)

    def at_once() -> None:
        with engine.connect() as connection:  # four threads each hold a connection at the same time
            connection.exec_driver_sql("SELECT 1")
            inside.wait(timeout=30)

    threads = [threading.Thread(target=at_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert engine.pool.checkedout() == 0 and engine.pool.checkedin() == 1  # the others were closed
