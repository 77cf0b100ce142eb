"""The README's commands run as printed and name tools its set-up installs; its pages are linked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_venv_tool_the_readme_names_is_installed_by_its_set_up_and_runs():
    text = "".join(p.read_text() for p in DOCS)
    tools = sorted(set(re.findall(r"\.venv/bin/([A-Za-z0-9_.-]+)", text)))
    assert "optuna-dashboard" in tools
    bin_dir = Path(sys.executable).parent  # the tests run in the README's venv
    for tool in tools:
        assert (bin_dir / tool).is_file(), (
            f"the README names .venv/bin/{tool}; the set-up does not install it"
        )
    result = subprocess.run([str(bin_dir / "optuna-dashboard"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "storage" in result.stdout.lower()


@pytest.mark.slow
def test_the_readmes_tab_completion_installs_for_python_and_completes_train_groups():
    readme = (ROOT / "README.md").read_text()
    assert 'eval "$(python runners/train.py -sc install=bash)"' in readme
    train = [sys.executable, "runners/train.py"]
    installed = subprocess.run([*train, "-sc", "install=bash"], cwd=ROOT, capture_output=True, text=True)
    assert installed.returncode == 0 and "-F hydra_bash_completion python" in installed.stdout
    line = "python runners/train.py hparams_search="
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    query = subprocess.run([*train, "-sc", "query=bash"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert query.returncode == 0 and "hparams_search=optuna_fast" in query.stdout.split(), query.stdout


@pytest.mark.slow
def test_trains_help_answers_without_loading_torch_and_without_warnings():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "runners/train.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "== Configuration groups ==" in result.stdout
    imported = {
        line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert not {"torch", "lightning", "timm"} & imported
    assert "Warning" not in "".join(
        line for line in result.stderr.splitlines() if not line.startswith("import time:")
    )


def _help_groups(script: str) -> set[str]:
    """The config groups an entry point's --help lists."""
    result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = result.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    return {line.split(":", 1)[0] for line in listed.splitlines()[2:] if ":" in line}


@pytest.mark.slow
def test_each_entry_points_help_lists_its_own_config_groups_only():
    train, predict = _help_groups("runners/train.py"), _help_groups("runners/predict.py")
    assert {"model", "data", "trainer", "hparams_search", "search", "preset"} <= train
    assert predict == {"input", "ensemble", "tta"}
    assert not train & predict


def test_the_readme_links_every_page_of_docs_and_each_link_resolves():
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)]+\.md)\)", readme))
    assert linked == {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links {target}"


@pytest.mark.slow
def test_the_readmes_everyday_commands_compose_where_the_main_job_ran(tmp_path):
    """Each everyday command, as printed, composes its config (`--cfg job`) in a directory where a study of the
    main job's name ran (its preset exists there)."""
    study = [
        "-m",
        "hparams_search=optuna_fast",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.quick_validation.epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "trainer.accelerator=cpu",
        "callbacks.progress=null",
    ]
    ran = subprocess.run(
        [sys.executable, str(ROOT / "runners/train.py"), *study], cwd=tmp_path, capture_output=True
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Everyday commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0].split() for line in block.splitlines() if line.startswith("python ")]
    assert len(commands) >= 8
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    for command in commands:
        script = ROOT / command[1]
        # --cfg composes one job: a multirun's -m goes, and a swept value is its first one
        args = [re.sub(r"^([\w.]+=)([^,(]+),.*$", r"\1\2", a) for a in command[2:] if a != "-m"]
        result = subprocess.run(
            [sys.executable, str(script), *args, "--cfg", "job"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, (command, result.stderr[-1500:])
