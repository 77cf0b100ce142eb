"""Where a study lives and how it is opened: the default SQLite file, any SQLAlchemy URL, clear errors.

One storage object per URL and process: the sweep, the jobs it runs in its own process and their
heartbeats share its engine instead of opening the database again for every trial.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from sweeplab.errors import SweeplabError, config_error, did_you_mean, one_line
from sweeplab.search.naming import STUDIES_DIR
from sweeplab.search.outage import DEFAULT_RETRY_S, Outage, RetryingStorage

# Where a sweep puts a storage URL that carries a password, for its jobs: the URL itself stays out of
# the configs and overrides Hydra saves in every job's .hydra/ (they hold ${oc.env:SWEEPLAB_STORAGE}).
STORAGE_ENV = "SWEEPLAB_STORAGE"

optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own status line per trial replaces Optuna's
# Heartbeats with ask/tell are what sweeplab does on purpose (each trial's process records its own).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", message="Argument ``heartbeat_interval`` is an experimental feature")

_OPEN: dict[tuple[str, int | None, int], RetryingStorage] = {}


def default_storage(study_name: str, root_dir: str | os.PathLike) -> str:
    """`<root_dir>/studies/<study_name>.db`: outside the timestamped sweep dirs, so every rerun finds it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name).strip("._") or "study"
    return f"sqlite:///{Path(root_dir).resolve() / STUDIES_DIR / safe}.db"


def resolve_storage(
    storage: Any, study_name: str, root_dir: str | os.PathLike, key: str = "hydra.sweeper.storage"
) -> str:
    if storage in (None, "", "null"):
        return default_storage(study_name, root_dir)
    if not isinstance(storage, str):
        raise config_error(
            key,
            storage,
            "must be a database URL (sqlite:///..., postgresql://...) or a storage proxy's grpc://...",
        )
    return storage


def _parsed(url: str) -> Any:
    """SQLAlchemy's reading of `url`, or None where it is not a URL SQLAlchemy can read. Imported here:
    SQLAlchemy takes 0.2 s to import, which a training run outside a study never needs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        return None


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = _parsed(url)
    if parsed is None or parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def masked(url: str) -> str:
    """The URL as it may appear in logs and files: any password replaced by ***."""
    parsed = _parsed(url)
    if parsed is None:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
    return parsed.render_as_string(hide_password=True)


def masked_argument(argument: str) -> str:
    """A command-line argument as it may be stored: `key=<url>` with the URL's password masked."""
    key, sep, value = argument.partition("=")
    return f"{key}{sep}{masked(value)}" if sep and "://" in value else argument


def has_password(url: str) -> bool:
    parsed = _parsed(url)
    if parsed is None:
        return bool(re.search(r"//[^:/@]+:[^@]*@", url))
    return parsed.password is not None


GRPC_SCHEME = "grpc"  # grpc://<host>:<port>: a storage proxy (`search.proxy`) in front of the database
PROXY_PORT = 13000  # a proxy URL's port when it names none (Optuna's)
PROXY_WAIT_S = 10.0  # how long opening waits for a proxy to answer


def proxy_address(url: str, key: str = "hydra.sweeper.storage") -> tuple[str, int] | None:
    """The host and port of a storage proxy's URL (grpc://host:port), None for a database URL."""
    parsed = _parsed(url)
    if parsed is None or parsed.drivername != GRPC_SCHEME:
        return None
    if parsed.database or parsed.username or parsed.query:
        raise config_error(
            key, masked(url), f"a storage proxy's URL is {GRPC_SCHEME}://<host>:<port>, no more"
        )
    return parsed.host or "localhost", parsed.port or PROXY_PORT


SERVER_OVERFLOW = 8  # connections a storage server's process opens beyond its one kept, while threads overlap


def open_storage(
    url: str,
    key: str = "hydra.sweeper.storage",
    heartbeat_interval: int | None = None,
    retry_s: float | None = None,
) -> RetryingStorage:
    """An Optuna storage for `url` (one per URL and process), failing with one line naming `key`.

    With `heartbeat_interval`, trials of this storage that stop sending heartbeats become stale
    (Optuna's heartbeat: see `records.recover_stale`); a storage opened without one in a process that
    already has one for the URL shares it.

    `grpc://host:port` reaches the database through a storage proxy (`python runners/proxy.py`): one pool of
    connections for every process of every sweep, where each process would otherwise hold its own.

    Once open, its calls wait out an outage of the database for up to `retry_s` seconds
    (`hydra.sweeper.storage_retry`; None: as the process's storage for the URL already does, else
    `outage.DEFAULT_RETRY_S`; 0: not at all): see `search.outage`. Opening itself never waits.

    SQLite runs in WAL mode (a plain reader, such as optuna-dashboard, never blocks the writer) with a 60 s
    busy timeout; each of sweeplab's transactions holds the write lock from its first statement
    (`_lock_before_reading`), so sweeps, workers and heartbeats take turns. Opening is tried three times:
    processes that open a new database at once (several sweeps, a report) race to create Optuna's tables.
    """
    pid = os.getpid()
    opened = _OPEN.get((url, heartbeat_interval, pid))
    if opened is None and heartbeat_interval is None:
        opened = next((s for (u, _, p), s in _OPEN.items() if u == url and p == pid), None)
    if opened is not None:
        if retry_s is not None:
            opened.outage.window_s = float(retry_s)
        return opened
    proxy = proxy_address(url, key)
    if proxy is None:  # Optuna's trial cache around the database, as a study would wrap it
        delegate = optuna.storages.get_storage(_connect(url, key, heartbeat_interval))
    else:
        delegate = _connect_proxy(url, *proxy, key)
    window = DEFAULT_RETRY_S if retry_s is None else float(retry_s)
    storage = RetryingStorage(delegate, Outage(masked(url), window), beat_interval=heartbeat_interval)
    _OPEN[(url, heartbeat_interval, pid)] = storage
    return storage


def _connect_proxy(url: str, host: str, port: int, key: str) -> optuna.storages.BaseStorage:
    """A client of the storage proxy at host:port, or one line naming `key` and how to start the proxy."""
    try:
        import grpc  # noqa: F401  (Optuna's client imports it on first use)
    except ImportError:
        raise config_error(
            key, url, "gRPC is not installed here: pip install 'sweeplab[proxy]' (grpcio, protobuf)"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=PROXY_WAIT_S)
    except ConnectionError:
        proxy.close()
        raise config_error(
            key,
            url,
            f"no storage proxy answered within {PROXY_WAIT_S:g} s; start one on {host}: "
            f"python runners/proxy.py storage=<database URL> host=0.0.0.0 port={port}",
        ) from None
    return proxy


def _connect(url: str, key: str, heartbeat_interval: int | None) -> optuna.storages.RDBStorage:
    """Open `url` for Optuna, or fail with one line naming `key`, the storage and what to do.

    A SQLite file is checked first (a damaged one is refused before anything is written to it)."""
    path = sqlite_path(url)
    if path is not None:
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        # one connection kept per process; a thread that needs one while it is busy (the heartbeat, a report
        # racing the loop) opens another for as long as it needs it
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 1, "max_overflow": SERVER_OVERFLOW}
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            if path is not None:
                _prepare_sqlite(path)
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval
            )
            if path is not None:
                _lock_before_reading(storage.engine)
            return storage
        except Exception as exc:  # sqlalchemy/driver errors come in many types; all mean "cannot open"
            problem, lasting = storage_problem(exc)
            if attempt < attempts and not lasting:
                time.sleep(1.0)
                continue
            raise config_error(key, masked(url), f"cannot open it: {problem}") from None
    raise AssertionError("unreachable")


_FULL_SERVER = (
    "the server has no connection left (its max_connections, or the role's CONNECTION LIMIT); a study holds "
    "one per worker and two per sweep: run fewer workers on this server, raise its max_connections, or put "
    'PgBouncer in front of it (docs/parallel.md, "Many workers on one server")'
)
# (pattern in the driver's message, what to do, whether trying again can help)
_REMEDIES: tuple[tuple[str, str, bool], ...] = (
    ("file is not a database", "it is not a SQLite database; point the key at a new file", True),
    (
        "malformed",
        "the database file is damaged; restore it from a copy, or salvage it with "
        "`sqlite3 <file> .recover | sqlite3 <new file>` and point the key at the new file",
        True,
    ),
    ("cannot create the directory", "use a directory that exists or can be created", True),
    ("unable to open database file", "cannot create or open the file there; use a writable directory", True),
    ("readonly", "the place is read-only; use a writable directory", True),
    ("read-only", "the place is read-only; use a writable directory", True),
    ("permission denied", "no permission to write there; use a writable directory", True),
    ("password authentication failed", "the server refused the login; check user and password", True),
    ("does not exist", "create it on the server first (createdb), or fix the URL's name", True),
    ("connection refused", "no server answers there; is it running, and are host and port right?", False),
    ("too many clients", _FULL_SERVER, False),
    ("too many connections", _FULL_SERVER, False),
    ("remaining connection slots are reserved", _FULL_SERVER, False),
    ("could not translate host", "the host name is unknown; check the URL's host", True),
    ("name or service not known", "the host name is unknown; check the URL's host", True),
    ("timeout", "the server did not answer in time; is it reachable from this machine?", False),
    ("no module named", "its database driver is not installed: pip install it", True),
)


def storage_problem(exc: BaseException) -> tuple[str, bool]:
    """What the storage's driver said (not Optuna's or SQLAlchemy's wrapper), with what to do, and
    whether it lasts (trying again at once cannot help)."""
    root = exc
    seen = {id(root)}
    while True:
        context = None if root.__suppress_context__ else root.__context__
        inner = getattr(root, "orig", None) or root.__cause__ or context
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        root = inner
    said = one_line(root, with_type=False)
    said = re.sub(r"^\([\w.]+\)\s*", "", said)  # SQLAlchemy's "(module.Error) " prefix
    lower = said.lower()
    for pattern, remedy, lasting in _REMEDIES:
        if pattern in lower:
            return f"{said} ({remedy})", lasting
    return said, isinstance(root, ImportError)


def _lock_before_reading(engine: sqlalchemy.engine.Engine) -> None:
    """Begin each of the engine's transactions with SQLite's write lock (BEGIN IMMEDIATE).

    Optuna changes a trial's state by reading it and writing it in one transaction, its row locked
    (`SELECT ... FOR UPDATE`), so that of several processes popping a queued trial or closing a dead one
    only one succeeds. SQLite has no row locks, and Python's sqlite3 runs a SELECT outside any
    transaction, so two sweeps on one SQLite file could both pop one trial or both re-queue a dead one's
    params. Holding the one write lock from the first read makes each step atomic, as on PostgreSQL."""
    sqlalchemy.event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))


def _prepare_sqlite(path: Path) -> None:
    """Create the file's directory, switch the file to write-ahead logging (a property of the file: set
    once, kept) and check an existing file's pages, so a damaged study is refused before any write."""
    existed = path.is_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create the directory {path.parent}: {exc.strerror}") from None
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as db:
        if existed:
            found = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
            if found != ["ok"]:
                raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(found)}")
        db.execute("PRAGMA journal_mode=WAL")


def load_study(study_name: str, url: str, key: str = "storage") -> optuna.Study:
    """Open an existing study; a missing SQLite file or an unknown name fails with what the storage holds.

    A SQLite file that does not exist is an error here (opening it would create an empty study database).
    """
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise config_error(key, url, "no such SQLite file; has a study run from this directory?")
    storage = open_storage(url, key=key)
    names = optuna.study.get_all_study_names(storage)
    if study_name not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise SweeplabError(
            f"study_name={study_name!r}: no such study in {masked(url)}"
            f"{did_you_mean(study_name, names)}; studies there: {listed}"
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def checkpoint(url: str) -> None:
    """Fold SQLite's write-ahead log back into the database file, so that the .db file alone holds the
    study (to copy or send); the WAL is otherwise folded only when the last connection closes cleanly."""
    path = sqlite_path(url)
    if path is not None and path.is_file():
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def warm() -> None:
    """Import what opening a storage imports on first use (SQLAlchemy's ORM, alembic, the SQLite dialect),
    by creating a study storage in memory: a process that will open the real one later then spends no time
    on it (the trials' fork server calls it once for every trial it starts)."""
    engine_kwargs = {"poolclass": sqlalchemy.pool.StaticPool}
    storage = optuna.storages.RDBStorage("sqlite:///:memory:", engine_kwargs=engine_kwargs)
    storage.engine.dispose()
