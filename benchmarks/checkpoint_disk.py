"""The disk a study keeps: a 15-trial `optuna_fast` study's sweep dir with every trial's full checkpoint
(`hydra.sweeper.checkpoints.keep=null callbacks.checkpoint.save_weights_only=false`, what sweeplab kept
before) against the defaults (the 3 best complete trials keep a weights-only checkpoint), side by side in
one run; then the checkpoint total of a 150-trial study computed for bigger models from their parameter
counts (timm, no weights downloaded).

Method: the same study both ways (the seeded TPE sampler and the same pruner, so the same trials), each in
a fresh directory; sizes are the bytes of the files under the sweep dir (`du`-like, links not followed), and
of its `*.ckpt` files alone. The computed totals use the bytes per parameter measured here: a full
checkpoint (fp32 weights, AdamW's two moments) against a weights-only one, times the parameter count.

    python benchmarks/checkpoint_disk.py
    python benchmarks/checkpoint_disk.py --trials 6
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import timm
import torch

from _common import machine, sweeplab, timed

MODELS = ("efficientnet_b4", "convnext_base")


def size(root: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in root.rglob(pattern) if p.is_file() and not p.is_symlink())


def sweep_dir(run_dir: Path) -> Path:
    dirs = {p.parent for p in (run_dir / "multirun").rglob("*") if p.name.isdigit() and p.is_dir()}
    assert len(dirs) == 1, dirs
    return dirs.pop()


def params_in(path: Path) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return sum(v.numel() for v in state.values() if v.is_floating_point())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--computed-trials", type=int, default=150)
    parser.add_argument("--keep", type=int, default=3)
    args = parser.parse_args()

    study = ["-m", "hparams_search=optuna_fast", f"hydra.sweeper.n_trials={args.trials}", "exp_name=disk"]
    ways = {
        "before (every trial, full state)": [
            "hydra.sweeper.checkpoints.keep=null",
            "callbacks.checkpoint.save_weights_only=false",
        ],
        f"after (keep={args.keep}, weights only)": [f"hydra.sweeper.checkpoints.keep={args.keep}"],
    }
    found: dict[str, tuple[int, int, int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sweeplab-disk-") as tmp_name:
        tmp = Path(tmp_name)
        for i, (way, extra) in enumerate(ways.items()):
            run_dir = tmp / str(i)
            seconds = timed(sweeplab(*study, *extra), run_dir, tmp / f"{i}.log")
            out = sweep_dir(run_dir)
            ckpts = sorted(out.rglob("*.ckpt"))
            per_param = size(out, "*.ckpt") / max(1, sum(params_in(p) for p in ckpts))
            found[way] = (size(out), size(out, "*.ckpt"), len(ckpts), per_param)
            print(
                f"  {way}: {seconds:.0f}s, {found[way][0] / 2**20:.1f} MiB, {len(ckpts)} checkpoints",
                flush=True,
            )

    print(f"machine: {machine()}")
    print(
        f"{args.trials}-trial optuna_fast study on the bundled digits (the default test_resnet model, AdamW)"
    )
    print(f"{'':34} {'sweep dir':>10} {'checkpoints':>12} {'files':>6} {'bytes/param':>12}")
    for way, (total, ckpt, n, per_param) in found.items():
        print(f"{way:34} {total / 2**20:8.1f}MiB {ckpt / 2**20:10.1f}MiB {n:6d} {per_param:12.2f}")
    before, after = found.values()
    print(f"sweep dir before / after: {before[0] / after[0]:.1f}x")
    print(f"computed checkpoint total of a {args.computed_trials}-trial study:")
    for name in MODELS:
        params = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
        full = args.computed_trials * params * before[3]
        kept = args.keep * params * after[3]
        print(
            f"  {name} ({params / 1e6:.1f}M params): every trial, full state {full / 2**30:.1f} GiB; "
            f"keep={args.keep}, weights only {kept / 2**30:.2f} GiB"
        )


if __name__ == "__main__":
    main()
