"""The GPU check (`benchmarks/gpu/`) stays runnable while no GPU is at hand: its dry run runs every step at
toy size here, and the wheel set it carries to the GPU machine is judged complete or not."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
import wheels  # noqa: E402

_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu" / "check.py")
check = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

STEPS = ["study", "predict", "memory", "parallel", "throughput", "ddp"]


def fake_wheel(folder: Path, name: str, version: str, requires: list[str], tag: str = "py3-none-any") -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\nVersion: {version}\n{meta}")
    return path


def complete_set(folder: Path) -> None:
    """One wheel per carried package, each needing only what the set or the GPU machine has."""
    for name in wheels.CARRIED:
        fake_wheel(
            folder, name, "1.0", ["packaging", 'colorama; sys_platform == "win32"', "pytest; extra == 'dev'"]
        )


def test_a_complete_wheel_set_passes_and_what_the_gpu_machine_lacks_is_named(tmp_path):
    complete_set(tmp_path)
    assert wheels.verify(tmp_path) == []
    fake_wheel(tmp_path, "optuna", "1.0", ["alembic>=2", "cmaes"])  # replaces the first optuna wheel
    assert wheels.verify(tmp_path) == [
        "optuna 1.0 needs alembic>=2; carried: alembic 1.0",
        "optuna 1.0 needs cmaes: neither carried nor on the GPU machine",
    ]


def test_a_missing_a_foreign_or_a_wrong_platform_wheel_is_named(tmp_path):
    complete_set(tmp_path)
    (tmp_path / "plotly-1.0-py3-none-any.whl").unlink()
    fake_wheel(tmp_path, "cmaes", "0.1", [])
    (tmp_path / "sqlalchemy-1.0-py3-none-any.whl").unlink()
    fake_wheel(tmp_path, "sqlalchemy", "1.0", [], tag="cp311-cp311-manylinux_2_17_x86_64")
    assert sorted(wheels.verify(tmp_path)) == [
        "cmaes-0.1-py3-none-any.whl: not a carried package (CARRIED in wheels.py)",
        "plotly: no wheel in " + str(tmp_path),
        "sqlalchemy-1.0-cp311-cp311-manylinux_2_17_x86_64.whl: not installable on CPython 3.12, x86-64 Linux",
    ]


def worker_records(bad_fork: set[int] = frozenset(), cold: set[int] = frozenset()) -> list[dict]:
    """What CudaWatch records in a GPU study of 3 trials in workers 11, 12, 13 of sweep 10."""
    sweep = [{"event": e, "pid": 10, "cuda_initialized": False} for e in ("sweep_start", "sweep_end")]
    jobs = [
        record
        for j in range(3)
        for record in (
            {
                "event": "job_start",
                "pid": 11 + j,
                "job": j,
                "cuda_initialized": False,
                "bad_fork": j in bad_fork,
            },
            {"event": "job_end", "pid": 11 + j, "job": j, "cuda_initialized": j not in cold, "gpu": "H100"},
        )
    ]
    return [sweep[0], *jobs, sweep[1]]


def test_on_a_gpu_a_worker_forked_after_a_cuda_call_or_never_on_the_gpu_is_a_broken_promise():
    lines = {line.promise: line for line in check.judge_processes(worker_records(), on_gpu=True)}
    assert {line.status for line in lines.values()} == {"PASS"}
    assert lines["workers train on the GPU"].detail == "3 workers on H100"
    lines = {line.promise: line for line in check.judge_processes(worker_records({1}, {2}), on_gpu=True)}
    assert lines["no worker is forked after a CUDA call in the sweep"].status == "FAIL"
    assert lines["no worker is forked after a CUDA call in the sweep"].detail.startswith("jobs [1]: ")
    assert lines["workers train on the GPU"].detail == "jobs [2] never initialised CUDA"


def test_gpu_memory_off_the_first_trials_baseline_by_more_than_a_mib_is_a_broken_promise():
    def points(*mib: float) -> list[dict]:
        first = [{"event": "job_start", "job": 0}]  # before CUDA: nothing measured
        jobs = [
            {"event": "job_start", "job": j + 1, "allocated": int(m * check.MIB)} for j, m in enumerate(mib)
        ]
        return [*first, *jobs[:-1], {"event": "sweep_end", "allocated": int(mib[-1] * check.MIB)}]

    held = check.judge_gpu_memory(points(800, 800.5, 800, 800), on_gpu=True)
    assert held.status == "PASS" and held.detail.startswith("before trial 1: 800.0 MiB")
    assert check.judge_gpu_memory(points(800, 800, 1900, 800), on_gpu=True).status == "FAIL"
    assert check.judge_gpu_memory(points(800, 800), on_gpu=True).status == "FAIL"  # too few trials measured
    assert check.judge_gpu_memory(points(800, 800, 1900, 800), on_gpu=False).status == "INFO"


def test_the_pins_are_the_versions_this_suite_runs():
    from importlib.metadata import version

    assert wheels.pins() == [f"{name}=={version(name)}" for name in wheels.CARRIED]


@pytest.mark.slow
def test_the_gpu_checks_dry_run_runs_every_step_at_toy_size_and_breaks_no_promise(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/gpu/check.py"),
            "--dry-run",
            "--budget",
            "400",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    check = json.loads((out / "check.json").read_text())
    assert check["mode"] == "toy" and check["broken"] == []
    assert [s["step"] for s in check["steps"]] == STEPS
    statuses = {(s["step"], line["promise"]): line["status"] for s in check["steps"] for line in s["lines"]}
    assert "SKIP" not in statuses.values() and "FAIL" not in statuses.values()
    judged = {promise for (_, promise), status in statuses.items() if status == "PASS"}
    assert {
        "the sweep process never initialises CUDA",
        "a rescue resumes its paused trial's weights and trains on to the full epochs",
        "predict in bf16 agrees with fp32 on >= 99% of images",
        "a far too large batch fails with a memory reason",
        "the trial after it runs",
        "each trial's model is freed before the next trial starts",
    } <= judged
    assert (out / "check.md").read_text().startswith("# sweeplab GPU check")
    assert (out / "logs.tar.gz").stat().st_size > 0


@pytest.mark.slow
def test_prepare_downloads_the_carried_wheels_and_proves_them_in_a_fresh_python_3_12(tmp_path):
    folder = tmp_path / "whl"
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu/prepare.sh")],
        cwd=tmp_path,
        env={**os.environ, "PYTHON": sys.executable, "WHL": str(folder)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert wheels.verify(folder) == []
    assert f"Hydra finds {wheels.PLUGIN}" in result.stdout
