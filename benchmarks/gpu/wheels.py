"""The wheels the GPU check carries to the GPU machine, which reaches no package index: what sweeplab needs
beyond the machine's own packages (`device_packages.txt`), at the versions the CPU suite runs here.

    python benchmarks/gpu/wheels.py pins            # NAME==VERSION of each carried package, as installed here
    python benchmarks/gpu/wheels.py verify .whl     # one wheel each, for CPython 3.12 on x86-64 Linux, and
                                                    # every requirement met by a carried wheel or the machine
    python benchmarks/gpu/wheels.py device-needs .whl   # the machine's packages the carried wheels require
    python benchmarks/gpu/wheels.py imports         # in a Python 3.12 with the wheels on its path: import
                                                    # every non-torch module the check uses, find the plugin

`prepare.sh` runs them in that order; only the standard library and `packaging` are needed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

HERE = Path(__file__).resolve().parent
# sweeplab's dependencies (and theirs) that the GPU machine's image lacks; the torch family, numpy, PyYAML,
# rich and the rest come from the machine
CARRIED = (
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "optuna",
    "sqlalchemy",
    "alembic",
    "mako",
    "colorlog",
    "plotly",
)
# what the GPU machine runs: CPython 3.12 on x86-64 Linux (glibc 2.28 or newer: manylinux_2_28 and older)
PYTHON = "3.12"
ENVIRONMENT = {
    "python_version": PYTHON,
    "python_full_version": f"{PYTHON}.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
ACCEPTED_TAGS = {
    Tag(interpreter, abi, platform)
    for interpreter, abis in (("cp312", ("cp312", "abi3", "none")), ("py3", ("none",)), ("py312", ("none",)))
    for abi in abis
    for platform in (
        "any",
        "linux_x86_64",
        "manylinux1_x86_64",
        "manylinux2010_x86_64",
        "manylinux2014_x86_64",
        *(f"manylinux_2_{n}_x86_64" for n in range(5, 29)),
    )
}
MAX_MIB = 60
# what the check imports beyond torch, Lightning, timm, torchmetrics, torchvision and the machine's own
# numpy, pandas, matplotlib, scikit-learn
IMPORTS = (
    "yaml",
    "omegaconf",
    "hydra",
    "hydra.experimental.callback",
    "sqlalchemy",
    "alembic",
    "colorlog",
    "optuna",
    "optuna.visualization",
    "plotly",
    "sweeplab.search.records",
    "sweeplab.search.plan",
)
PLUGIN = "hydra_plugins.sweeplab_sweeper.sweeplab_sweeper.SweeplabSweeper"


def device_packages() -> set[str]:
    text = (HERE / "device_packages.txt").read_text()
    lines = (line for line in text.splitlines() if not line.startswith("#"))
    return {canonicalize_name(name) for line in lines for name in line.split()}


def pins() -> list[str]:
    """NAME==VERSION of every carried package, from this interpreter's installed metadata: the device runs
    what the CPU suite ran."""
    found = []
    for name in CARRIED:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            sys.exit(
                f"{name}: not installed in {sys.executable}; install the project first (pip install -e .)"
            )
    return found


def _wheels(folder: Path) -> dict[str, tuple[Path, Version, frozenset[Tag]]]:
    found: dict[str, tuple[Path, Version, frozenset[Tag]]] = {}
    for path in sorted(folder.glob("*.whl")):
        name, version, _, tags = parse_wheel_filename(path.name)
        if name in found:
            sys.exit(f"{folder}: two wheels of {name} ({found[name][0].name}, {path.name}); keep one")
        found[name] = (path, version, tags)
    return found


def _requirements(path: Path) -> list[Requirement]:
    with zipfile.ZipFile(path) as wheel:
        (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        headers = Parser().parsestr(wheel.read(meta).decode())
    reqs = [Requirement(r) for r in headers.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(ENVIRONMENT)]


def verify(folder: Path) -> list[str]:
    """Everything wrong with the wheel set in `folder`, one line each (nothing: it is complete)."""
    wheels = _wheels(folder)
    device = device_packages()
    problems = []
    for name in map(canonicalize_name, CARRIED):
        if name not in wheels:
            problems.append(f"{name}: no wheel in {folder}")
    for name, (path, version, tags) in wheels.items():
        if name not in map(canonicalize_name, CARRIED):
            problems.append(f"{path.name}: not a carried package (CARRIED in {Path(__file__).name})")
        if not tags & ACCEPTED_TAGS:
            problems.append(f"{path.name}: not installable on CPython {PYTHON}, x86-64 Linux")
        for req in _requirements(path):
            dep = canonicalize_name(req.name)
            if dep in wheels:
                if not req.specifier.contains(wheels[dep][1], prereleases=True):
                    problems.append(f"{name} {version} needs {req}; carried: {dep} {wheels[dep][1]}")
            elif dep not in device:
                problems.append(f"{name} {version} needs {req}: neither carried nor on the GPU machine")
    size = sum(p.stat().st_size for p, _, _ in wheels.values()) / 2**20
    if size > MAX_MIB:
        problems.append(f"{folder}: {size:.1f} MiB of wheels, over {MAX_MIB} MiB")
    return problems


def device_needs(folder: Path) -> list[str]:
    """The GPU machine's own packages that the carried wheels require, as requirement strings."""
    wheels = _wheels(folder)
    needs = {
        str(req)
        for path, _, _ in wheels.values()
        for req in _requirements(path)
        if canonicalize_name(req.name) not in wheels
    }
    return sorted(needs)


def imports() -> None:
    """Import each non-torch module the check uses and find sweeplab's sweeper among Hydra's plugins."""
    for module in IMPORTS:
        importlib.import_module(module)
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    found = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)}
    if PLUGIN not in found:
        sys.exit(f"Hydra does not find {PLUGIN}; it finds {sorted(found)}")
    print(f"imported {len(IMPORTS)} modules on Python {sys.version.split()[0]}; Hydra finds {PLUGIN}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["pins", "verify", "device-needs", "imports"])
    parser.add_argument("folder", nargs="?", type=Path, default=Path(".whl"))
    args = parser.parse_args()
    if args.what == "pins":
        print("\n".join(pins()))
    elif args.what == "verify":
        problems = verify(args.folder)
        if problems:
            sys.exit("\n".join(problems))
        wheels = _wheels(args.folder)
        size = sum(p.stat().st_size for p, _, _ in wheels.values()) / 2**20
        print(f"{len(wheels)} wheels, {size:.1f} MiB, complete for CPython {PYTHON} on the GPU machine")
    elif args.what == "device-needs":
        print("\n".join(device_needs(args.folder)))
    else:
        imports()


if __name__ == "__main__":
    main()
