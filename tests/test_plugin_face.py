"""Installing sweeplab leaves every other Hydra app as it was: the plugin patches nothing of its host."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hydra_plugins.sweeplab_sweeper as face_package
from tests.conftest import QUICK, ROOT, on_search_path, run_cli

FACE_DIR = str(Path(face_package.__file__).resolve().parent.parent)

APP = """
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    print(dict(cfg))

if __name__ == "__main__":
    main()
"""

# Runs app.py as `python app.py ...` would, with or without sweeplab's plugin visible to Hydra's scan.
LAUNCH = """
import runpy, sys
face_dir = sys.argv.pop(1)
if face_dir:
    import hydra_plugins
    hydra_plugins.__path__ = [p for p in hydra_plugins.__path__ if not p.startswith(face_dir)]
sys.argv[0] = "app.py"
runpy.run_path("app.py", run_name="__main__")
"""


def _plain_app(root: Path, broken: bool) -> Path:
    (root / "conf" / "db").mkdir(parents=True)
    (root / "app.py").write_text(APP)
    (root / "conf" / "config.yaml").write_text("defaults:\n  - db: mysql\n  - _self_\nx: 1\n")
    body = "driver: {name: [mysql}\n" if broken else "driver: mysql\n"
    (root / "conf" / "db" / "mysql.yaml").write_text(body)
    # a generated config where a study would leave one: only sweeplab's apps and commands look there
    generated = root / "studies" / "conf" / "db"
    generated.mkdir(parents=True)
    (generated / "generated.yaml").write_text("driver: generated\n")
    return root


def _run(app_dir: Path, args: list[str], with_plugin: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, "" if with_plugin else FACE_DIR, *args],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("broken", "args"),
    [
        (True, []),  # a YAML syntax error: Hydra's own report
        (False, ["db=null"]),  # a group set to null on the command line: Hydra's own refusal
        (False, ["db=generated"]),  # a study's generated config is not an option of another app
        (False, ["x=2"]),  # a good run
    ],
    ids=["yaml-error", "null-group", "generated-config", "good-run"],
)
def test_a_plain_hydra_app_behaves_the_same_with_and_without_the_plugin(tmp_path, broken, args):
    app = _plain_app(tmp_path, broken)
    without = _run(app, args, with_plugin=False)
    with_it = _run(app, args, with_plugin=True)
    # the one difference Hydra shows: its listing of the search path names the sampler/pruner options
    listed = "\tprovider=sweeplab, path=pkg://hydra_plugins.sweeplab_sweeper.conf\n"
    stderr = with_it.stderr.replace(listed, "")
    assert (with_it.returncode, with_it.stdout, stderr) == (
        without.returncode,
        without.stdout,
        without.stderr,
    )
    # nothing of sweeplab's own in what the app prints: file paths aside (the checkout or venv of a user who
    # cloned into sweeplab/ names it in every line of a traceback)
    assert "sweeplab" not in re.sub(r"/[^\s\"',]+", "<path>", stderr + with_it.stdout)


def test_plugin_discovery_replaces_no_function_of_hydra_or_omegaconf():
    code = """
import importlib, inspect, json, pkgutil, sys
import hydra, omegaconf

def snapshot():
    seen = {}
    for package in (hydra, omegaconf):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            # core_plugins: Hydra's own scan executes its plugin modules again
            if ".test_utils" in info.name or "_internal.grammar" in info.name or ".core_plugins" in info.name:
                continue
            try:
                module = importlib.import_module(info.name)
            except Exception:
                continue
            for name, obj in vars(module).items():
                seen[f"{info.name}.{name}"] = id(obj)
                if inspect.isclass(obj) and obj.__module__ == module.__name__:
                    for attr, value in vars(obj).items():
                        seen[f"{info.name}.{name}.{attr}"] = id(value)
    return seen

before = snapshot()
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
names = [p.__module__ + "." + p.__name__ for p in Plugins.instance().discover(Sweeper)]
after = snapshot()
changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
print(json.dumps({"sweepers": names, "changed": changed}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert "hydra_plugins.sweeplab_sweeper.sweeplab_sweeper.SweeplabSweeper" in found["sweepers"]
    assert found["changed"] == []


def test_the_sweepers_schema_is_one_class_in_a_process_after_hydras_plugin_scan():
    code = """
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
import hydra_plugins.sweeplab_sweeper.sweeplab_sweeper
Plugins.instance().discover(Sweeper)  # executes the plugin module once more
from sweeplab.search.schema import SweeplabSweeperConf
node = ConfigStore.instance().load("hydra/sweeper/sweeplab.yaml").node
print(OmegaConf.get_type(node) is SweeplabSweeperConf)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.slow
def test_hydra_full_error_still_gives_the_traceback_of_a_config_mistake(tmp_path):
    args = ["model=broken", on_search_path(tmp_path, "model/broken", "net: {name: [resnet18}\n")]
    quiet = run_cli(args, cwd=tmp_path)
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines()[-1].startswith("extra/model/broken.yaml:1:")
    assert "Traceback" not in quiet.stderr
    full = subprocess.run(
        [sys.executable, str(ROOT / "runners" / "train.py"), *args],
        cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 1
    assert "Traceback" in full.stderr and "yaml.parser.ParserError" in full.stderr


@pytest.mark.slow
def test_a_yaml_error_in_a_config_only_the_sweeper_composes_is_one_line(tmp_path):
    result = run_cli(
        [
            "-m",
            "hparams_search=optuna_fast",
            "~search",
            "model=choice(test_resnet,broken)",
            on_search_path(tmp_path, "model/broken", "net: {name: [resnet18}\n"),
            *QUICK,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "extra/model/broken.yaml:1:" in result.stderr and "YAML syntax error" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "studies").exists()
