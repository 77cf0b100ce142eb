"""A storage proxy: one process holds the database connections for every sweep and worker of a study.

Each process that opens a PostgreSQL study holds its own connections (one per worker, two per sweep), so 16
nodes of 8 workers need about 160 where a server allows 100 by default. Optuna's gRPC proxy serves the
storage API to any number of light clients over one pool: sweeps, their workers and reports open
`grpc://<host>:<port>` (`hydra.sweeper.storage`) instead of the database URL.

The proxy opens the database as a sweep does (`storage.open_storage`: created once here, an outage waited
out for `storage_retry` seconds while its clients' calls wait); its clients wait out a proxy that restarts.
It keeps no state that the database does not hold, so it may be stopped and started again at any time: a
trial asked through it before a restart takes its parameters through it after (`ServedStorage`).
"""

from __future__ import annotations

import errno
import logging
import socket
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from sweeplab.errors import config_error, one_line
from sweeplab.search.outage import RetryingStorage
from sweeplab.search.storage import SERVER_OVERFLOW, masked, open_storage, proxy_address

log = logging.getLogger("sweeplab.proxy")

# Calls served at once: as many as the proxy's pool of database connections holds (`storage.SERVER_OVERFLOW`
# plus the one kept), so a call never waits for a connection, only for a thread.
THREADS = SERVER_OVERFLOW + 1


def serve(storage: Any, host: Any, port: Any, storage_retry: Any = 600) -> None:
    """Serve the study storage `storage` (a database URL) on host:port until stopped (Ctrl-C, SIGTERM)."""
    if not isinstance(storage, str) or "://" not in storage:
        raise config_error(
            "storage",
            storage,
            "must be the database URL the proxy serves (postgresql://..., sqlite:///...), on the command line "
            "or in the SWEEPLAB_STORAGE environment variable",
        )
    if proxy_address(storage, key="storage") is not None:
        raise config_error("storage", storage, "is a proxy's URL; give the database URL the proxy serves")
    if not isinstance(host, str) or not host:
        raise config_error("host", host, "must be a host name or address to listen on (localhost, 0.0.0.0)")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise config_error("port", port, "must be a TCP port, 1 to 65535")
    if not isinstance(storage_retry, int | float) or isinstance(storage_retry, bool) or storage_retry < 0:
        raise config_error("storage_retry", storage_retry, "must be a number of seconds >= 0")
    _check_free(host, port)
    opened = open_storage(storage, key="storage", retry_s=storage_retry)
    reach = socket.getfqdn() if host in ("0.0.0.0", "::", "[::]") else host
    log.info(
        "storage proxy for %s on %s:%d; sweeps use hydra.sweeper.storage=grpc://%s:%d",
        masked(storage),
        host,
        port,
        reach,
        port,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            optuna.storages.run_grpc_proxy_server(
                ServedStorage(opened.delegate, opened.outage),
                host=host,
                port=port,
                thread_pool=ThreadPoolExecutor(max_workers=THREADS),
            )
        except RuntimeError as exc:  # gRPC's "Failed to bind to address", before it serves anything
            raise config_error("port", port, f"cannot listen on {host}:{port}: {one_line(exc)}") from None


def _check_free(host: str, port: int) -> None:
    """Refuse a port something already listens on. gRPC binds with SO_REUSEPORT, so a second proxy on a taken
    port would start and share its connections with the first, whatever database each serves."""
    try:
        addresses = {a[:2] + (a[4],) for a in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except socket.gaierror as exc:
        raise config_error("host", host, f"not an address of this machine: {exc.strerror}") from None
    for family, kind, address in addresses:
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart's old connections pass
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise config_error(
                        "port", port, f"cannot listen on {host}:{port}: {exc.strerror} (another proxy?)"
                    ) from None
                if exc.errno == errno.EACCES:
                    raise config_error(
                        "port", port, f"cannot listen on {host}:{port}: {exc.strerror}"
                    ) from None
                # an address family this machine lacks (no IPv6 loopback): gRPC leaves it out too


class ServedStorage(RetryingStorage):
    """The storage the proxy serves. Optuna's trial cache takes parameters only for trials it has created or
    read, and a client may ask a trial through the proxy before it restarts and suggest its parameters
    after: a trial the cache does not know is looked up in the database, its study read once, and the call
    made again."""

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        try:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        except KeyError:
            study_id = self._study_of(trial_id)
            if study_id is None:
                raise
            self.get_all_trials(study_id, deepcopy=False)  # the cache reads the study's trials, this one too
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def _study_of(self, trial_id: int) -> int | None:
        """The id of the study that holds trial `trial_id`, by its number; None where no study does."""
        try:
            number = self.get_trial_number_from_id(trial_id)
        except KeyError:
            return None
        for study in self.get_all_studies():
            study_id = self.get_study_id_from_name(study.study_name)
            try:
                if self.get_trial_id_from_study_id_trial_number(study_id, number) == trial_id:
                    return study_id
            except KeyError:
                continue
        return None
