"""A storage proxy (`runners/proxy.py`, `hydra.sweeper.storage=grpc://host:port`) lets every sweep and worker
share one pool of database connections, with heartbeats, pruning and the study's end as on the database."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from sweeplab.errors import SweeplabError
from sweeplab.search import storage as storage_module
from sweeplab.search.outage import BEAT_ATTR, Outage, RetryingStorage, outage_cause
from sweeplab.search.proxy import ServedStorage
from sweeplab.search.storage import open_storage
from tests.conftest import ROOT, free_port, run_cli, start_proxy

CURVE = [str(ROOT / "tests" / "apps" / "curve.py"), "-m"]


def test_where_optuna_keeps_no_heartbeats_a_trial_silent_for_two_intervals_is_stale():
    storage = RetryingStorage(InMemoryStorage(), Outage("memory"), beat_interval=30)
    study = optuna.create_study(storage=storage)
    beating, silent, never_beat, done = (study.ask() for _ in range(4))
    for trial in (beating, silent, done):
        storage.record_heartbeat(trial._trial_id)
    storage.set_trial_system_attr(silent._trial_id, BEAT_ATTR, time.time() - 61)
    study.tell(done, 1.0)
    assert storage.get_heartbeat_interval() == 30
    # a trial with no beat yet is its sweep's to claim (the unowned rule of `liveness` judges it)
    assert storage._get_stale_trial_ids(study._study_id) == [silent._trial_id]
    assert never_beat.number not in [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]


def test_a_storage_with_optuna_heartbeats_keeps_them(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=30)
    assert storage.beat_interval is None and storage.get_heartbeat_interval() == 30


def test_a_proxy_url_where_none_answers_is_one_line_naming_the_key_and_how_to_start_one(monkeypatch):
    monkeypatch.setattr(storage_module, "PROXY_WAIT_S", 0.5)
    url = f"grpc://127.0.0.1:{free_port()}"
    with pytest.raises(SweeplabError) as info:
        open_storage(url)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"hydra.sweeper.storage='{url}': no storage proxy answered"
    )
    assert "python runners/proxy.py storage=<database URL>" in message


def test_a_proxy_url_with_more_than_host_and_port_is_refused():
    with pytest.raises(SweeplabError, match=r"a storage proxy's URL is grpc://<host>:<port>, no more"):
        open_storage("grpc://127.0.0.1:13000/optuna")


def test_a_proxy_that_does_not_answer_is_an_outage_to_wait_out_and_other_grpc_errors_are_not():
    import grpc

    class Failed(grpc.RpcError):
        def __init__(self, code: grpc.StatusCode) -> None:
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

    assert outage_cause(Failed(grpc.StatusCode.UNAVAILABLE)) is not None
    assert outage_cause(Failed(grpc.StatusCode.NOT_FOUND)) is None


def _said(result: subprocess.CompletedProcess) -> str:
    """The one line a runner's error is (Hydra frames it as for any job), and no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("Error executing job") and lines[2].startswith("Set the environment"), lines
    return lines[1]


def test_the_proxy_refuses_a_missing_database_url_a_proxy_url_and_a_taken_port_in_one_line(tmp_path):
    missing = run_cli([], tmp_path, script="runners/proxy.py", env={"SWEEPLAB_STORAGE": ""})
    assert _said(missing).startswith("storage='': must be the database URL") and "SWEEPLAB_STORAGE" in _said(
        missing
    )
    looped = run_cli(["storage=grpc://127.0.0.1:13000"], tmp_path, script="runners/proxy.py")
    assert "is a proxy's URL" in _said(looped)
    port = free_port()
    first = start_proxy(f"sqlite:///{tmp_path / 'a.db'}", tmp_path, port)
    try:
        taken = run_cli(
            [f"storage=sqlite:///{tmp_path / 'b.db'}", "host=127.0.0.1", f"port={port}"],
            tmp_path,
            script="runners/proxy.py",
        )
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert _said(taken).startswith(f"port={port}: cannot listen on 127.0.0.1:{port}")


@pytest.mark.slow
def test_a_study_through_a_proxy_that_restarts_mid_study_prunes_and_ends_at_n_trials(tmp_path):
    """Two workers ask, report and tell through the proxy; the proxy is stopped for 4 s mid-study (its
    clients wait it out) and started again on its port; the study ends as it would on its database."""
    db = f"sqlite:///{tmp_path / 'study.db'}"
    port = free_port()
    proxy = start_proxy(db, tmp_path, port)
    args = [
        *CURVE,
        f"hydra.sweeper.storage=grpc://127.0.0.1:{port}",
        "hydra.sweeper.study_name=proxied",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.heartbeat_interval=5",
        "epochs=4",
        "epoch_s=0.5",
    ]
    with (tmp_path / "sweep.log").open("w") as log:
        sweep = subprocess.Popen([sys.executable, *args], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        study = optuna.load_study(study_name="proxied", storage=db) if _wait_for_trials(db, 3) else None
        assert study is not None, (tmp_path / "sweep.log").read_text()[-3000:]
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=30)
        time.sleep(4)
        proxy = start_proxy(db, tmp_path, port)
        assert sweep.wait(timeout=300) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    finally:
        sweep.kill()
        proxy.terminate()
        proxy.wait(timeout=30)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 10 and len({t.params["lr"] for t in counted}) == 10
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert any(t.state == TrialState.PRUNED for t in counted)
    assert all(BEAT_ATTR in t.system_attrs for t in counted)  # its sweep beat for it through the proxy
    log = (tmp_path / "sweep.log").read_text()
    assert "unreachable" in log and "back after" in log, log[-3000:]  # the stop was waited out, and said
    assert list(tmp_path.glob("multirun/*/*/report.md")) or list(tmp_path.glob("reports/*/report.md")), log[
        -2000:
    ]


def _wait_for_trials(db: str, finished: int, within_s: float = 120) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name="proxied", storage=db).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            trials = []
        if sum(t.state.is_finished() for t in trials) >= finished:
            return True
        time.sleep(0.2)
    return False


def test_a_trial_asked_before_the_proxy_restarts_takes_its_parameters_after(tmp_path):
    """The proxy answers for trials it did not create: a restarted proxy knows the study's trials so far."""
    db = f"sqlite:///{tmp_path / 'study.db'}"
    port = free_port()
    proxy = start_proxy(db, tmp_path, port)
    try:
        study = optuna.create_study(
            study_name="restarted",
            storage=open_storage(f"grpc://127.0.0.1:{port}"),
            sampler=optuna.samplers.RandomSampler(
                seed=0
            ),  # reads no trials, so nothing teaches the new proxy
        )
        trial = study.ask()
        proxy.terminate()
        proxy.wait(timeout=30)
        proxy = start_proxy(db, tmp_path, port)
        value = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        study.tell(trial, value)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
    assert optuna.load_study(study_name="restarted", storage=db).best_params == {"lr": value}


def test_the_served_storage_finds_a_trial_another_cache_created_and_refuses_one_no_study_holds(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="other", storage=url).ask()  # a second study in the database
    earlier = optuna.create_study(study_name="asked", storage=url)
    trial = earlier.ask()
    served = ServedStorage(optuna.storages.get_storage(url), Outage("db", 0))
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    served.set_trial_param(trial._trial_id, "lr", 0.01, lr)
    assert served.get_trial(trial._trial_id).params == {"lr": 0.01}
    with pytest.raises(KeyError):
        served.set_trial_param(trial._trial_id + 100, "lr", 0.01, lr)
