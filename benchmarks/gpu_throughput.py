"""Figure b: training images/s inside a sweeplab study trial against a hand-written loop, same model and batch.

Method, per model: the hand-written loop (`hand_loop` below) keeps the uint8 images resident on the
device, gathers a random batch by index, converts and normalises on the device, runs the model in
channels_last with bf16 autocast on a GPU (fp32 and the default layout on a CPU, as sweeplab does there),
AdamW, and times `--steps` steps after `--warmup` with the device synchronised at both ends. The study
trial is one trial of `runners/train.py -m` on `data=synthetic` (the same kind of random images: nothing
of the figure depends on the pixels), augmentation off, with `benchmarks/_probe.py:Throughput` timing the
same window the same way. Both run in separate fresh processes, the hand-written loop first, then the
trial, then the loop again: the ratio is trial / mean(loop runs).

    python benchmarks/gpu_throughput.py                      # resnet50, efficientnet_b0, convnext_tiny at 224
    python benchmarks/gpu_throughput.py --models test_resnet --img-size 32 --steps 20   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from _common import ROOT, RunFailed, grid_study, machine, sweeplab, timed

BENCH = ROOT / "benchmarks"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def hand_loop(
    model_name: str, img_size: int, batch: int, classes: int, images: int, warmup: int, steps: int
) -> float:
    """Images/s of a plain PyTorch loop: what the hardware gives this model without any framework."""
    import timm

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True
    gen = torch.Generator().manual_seed(0)
    x_all = torch.randint(0, 256, (images, 3, img_size, img_size), dtype=torch.uint8, generator=gen).to(dev)
    y_all = (torch.arange(images) % classes).to(dev)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    model = timm.create_model(model_name, num_classes=classes, pretrained=False).to(dev)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        idx = torch.randint(0, images, (batch,), device=dev)
        x = ((x_all[idx].float() / 255.0 - mean) / std).contiguous(memory_format=fmt)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - started)


@dataclass(frozen=True)
class Setting:
    """One measurement's model, sizes and timing window: the same for the hand-written loop and the trial."""

    model: str
    img_size: int = 224
    batch: int = 64
    classes: int = 17
    warmup: int = 15
    steps: int = 90

    @property
    def images(self) -> int:
        """Enough training images for warmup + steps batches in the first epoch."""
        return int((self.warmup + self.steps + 2) * self.batch / 0.8) + 1


def trial_command(s: Setting) -> list[str]:
    return sweeplab(
        *grid_study(["1e-3"]),
        "data=synthetic",
        f"data.num_images={s.images}",
        f"data.num_classes={s.classes}",
        f"data.img_size={s.img_size}",
        f"data.batch_size={s.batch}",
        "data.augment.hflip=0",
        f"model={s.model}",
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "callbacks.progress=null",
        "callbacks.lr_monitor=null",
        "+callbacks.probe._target_=_probe.Throughput",
        f"+callbacks.probe.warmup={s.warmup}",
        f"+callbacks.probe.steps={s.steps}",
        f"exp_name=throughput_{s.model}",
    )


def measure(s: Setting, work: Path, timeout: float | None = None) -> tuple[list[float], float]:
    """Images/s of the hand-written loop (run before and after) and of the study trial, each in a fresh
    process; the commands' output under `work`. RunFailed if one fails or all take over `timeout` s."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(1.0, deadline - time.monotonic())

    work.mkdir(parents=True, exist_ok=True)
    loop_cmd = [sys.executable, __file__, "--loop-only", s.model] + [
        f"--{k.replace('_', '-')}={v}" for k, v in asdict(s).items() if k != "model"
    ]

    def loop(i: int) -> float:
        log = work / f"{s.model}.loop{i}.log"
        timed(loop_cmd, work, log, timeout=left())
        return float(log.read_text().split()[-1])

    loops = [loop(0)]
    probe = work / f"{s.model}.probe"
    probe.unlink(missing_ok=True)
    env = {
        "SWEEPLAB_PROBE": str(probe),
        "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]),
    }
    log = work / f"{s.model}.trial.log"
    timed(trial_command(s), work / s.model, log, env=env, timeout=left())
    if not probe.exists():
        raise RunFailed(trial_command(s), "recorded no throughput", log)
    trial = float(probe.read_text().split()[0])
    loops.append(loop(1))
    return loops, trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_b0", "convnext_tiny"])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=17)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument(
        "--loop-only", metavar="MODEL", help=argparse.SUPPRESS
    )  # one hand-written run, in its own process
    args = parser.parse_args()
    sizes = {k: getattr(args, k) for k in ("img_size", "batch", "classes", "warmup", "steps")}
    if args.loop_only:
        s = Setting(args.loop_only, **sizes)
        print(hand_loop(s.model, s.img_size, s.batch, s.classes, s.images, s.warmup, s.steps))
        return
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="sweeplab-gpu-") as tmp:
        for model in args.models:
            loops, trial = measure(Setting(model, **sizes), Path(tmp))
            loop = statistics.mean(loops)
            print(
                f"{model:>16} {args.img_size}px batch {args.batch}: hand-written {loop:8.1f} img/s "
                f"({', '.join(f'{v:.1f}' for v in loops)}), study trial {trial:8.1f} img/s, ratio {trial / loop:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
