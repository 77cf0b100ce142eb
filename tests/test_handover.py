"""A job is handed its trial by the launcher that runs it; the training code, `sweeplab.report` and
`sweeplab.PruningCallback` take that trial rather than look one up."""

from __future__ import annotations

import optuna
import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus

import sweeplab
from sweeplab.launching.executors import LauncherBatches
from sweeplab.launching.handover import Handed, follower, handed, handing
from sweeplab.search.trial import TrialAddress, job_address, job_trial


@pytest.fixture
def address(tmp_path) -> TrialAddress:
    """Trial 1 of a study in a SQLite file, asked as a sweep asks it."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="handed", storage=url)
    study.ask()
    study.ask()
    return TrialAddress(
        storage=url, storage_retry=5.0, study_name="handed", number=1, pruner=None, guard=None, pause_keep=0
    )


@pytest.fixture(autouse=True)
def no_hydra_job():
    """No Hydra job runs: a trial found here was handed, not looked up in a job's config."""
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
    yield
    HydraConfig.instance().cfg = None


def test_a_job_reports_to_the_trial_its_launcher_handed_it_without_any_hydra_config(address):
    assert sweeplab.report(0.5, 1) is False and job_trial() is None  # nothing handed, no job: no trial
    with handing(Handed(address)):
        assert sweeplab.report(0.75, 1) is False and sweeplab.report(0.5, 2) is False
        assert job_trial() is job_trial()  # opened once per job
        assert job_address() == address
    assert job_trial() is None and handed() is None  # handed for the job's duration only
    study = optuna.load_study(study_name="handed", storage=address.storage)
    first, second = study.get_trials(deepcopy=False)
    assert first.intermediate_values == {} and second.intermediate_values == {1: 0.75, 2: 0.5}


def test_an_extra_ddp_rank_is_handed_no_trial_and_its_environment_does_not_make_one(address, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("SWEEPLAB_TRIAL_DIR", "/tmp")
    assert not follower()  # an environment is not a hand-over
    with handing(Handed(rank=1)):
        assert follower() and job_trial() is None and job_address() is None
        assert sweeplab.report(0.5, 1) is False
    with handing(Handed(address, rank=1)):
        assert job_trial() is None  # a rank never reports, whatever address came with it


def test_a_job_run_in_the_sweeps_process_is_handed_its_own_trial_and_jobs_elsewhere_are_not(address):
    seen = []

    def launch(batch, first):
        given = handed()
        seen.append((first, given.address if given is not None else None))
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.0) for _ in batch]

    here = LauncherBatches(launch, n_jobs=1, in_process=True)
    here.start(1, ["x=1"], address)
    here.wait_any()
    here.start(2, ["x=2"])  # no address: nothing handed, the job finds its trial from its config
    here.wait_any()
    elsewhere = LauncherBatches(launch, n_jobs=1)  # a launcher that runs the job in another process
    elsewhere.start(1, ["x=1"], address)
    elsewhere.wait_any()
    assert seen == [(1, address), (2, None), (1, None)]
