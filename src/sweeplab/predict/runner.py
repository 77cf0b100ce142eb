"""`runners/predict.py`: members → checks → images → each member's probabilities → the ensemble → files.

Every check (members, their agreement, the input's files, the ensemble rule) runs before any model is
loaded. The run dir gets submission.csv, probs/<member>.csv and probs/ensemble.csv, and metrics.json.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

from sweeplab.config import instantiate_node, positive_int
from sweeplab.errors import config_error
from sweeplab.predict.ensemble import Combined
from sweeplab.predict.infer import Device, Predicted, predict_member
from sweeplab.predict.inputs import Images
from sweeplab.predict.members import Member, check_agree, from_runs, from_study
from sweeplab.predict.tta import TTA
from sweeplab.search.naming import path_safe
from sweeplab.search.view import StudyView, check_name, dumps, stored_study_url

log = logging.getLogger("sweeplab.predict")

SUBMISSION = "submission.csv"
PROBS_DIR = "probs"
ENSEMBLE = "ensemble"


@dataclass
class Prediction:
    out_dir: Path
    members: list[Member]
    metrics: dict[str, Any]


def predict(cfg: DictConfig) -> Prediction:
    root = Path.cwd()
    members = _members(cfg, root)
    classes, img_size, in_chans = check_agree(members)
    rule = instantiate_node(cfg.ensemble, "ensemble")
    rule.check(members)
    tta = instantiate_node(cfg.tta, "tta")
    assert isinstance(tta, TTA)
    batch_size = positive_int(cfg, "batch_size")
    device = Device.pick(str(cfg.get("device", "auto")), str(cfg.get("precision", "auto")))
    source = instantiate_node(cfg.input, "input")
    images = source.load(members, img_size, in_chans)
    log.info(
        "%d member(s), %d classes, %dpx; input: %s; ensemble: %s; TTA: %s; on %s",
        len(members),
        len(classes),
        img_size,
        images.what,
        rule.name,
        ", ".join(tta.describe()),
        device.describe(),
    )

    pixels = _on_device(images.images, device, float(cfg.get("resident_max_gb", 4.0)))
    started = time.perf_counter()
    results: list[Predicted] = []
    for m in members:
        results.append(predict_member(m, pixels, tta, device, batch_size))
        log.info("%s: %.0f images/s (%d view(s))", m.name, len(images.ids) / results[-1].seconds, len(tta))
    seconds = time.perf_counter() - started
    combined = rule.combine(torch.stack([r.probs for r in results]), members)
    plain = (
        rule.combine(torch.stack([r.plain for r in results]), members)  # type: ignore[misc]
        if images.labels is not None and all(r.plain is not None for r in results)
        else None
    )

    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else root
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_submission(out_dir / SUBMISSION, images, [classes[i] for i in combined.labels.tolist()])
    names = _file_names(members)
    for m, r in zip(members, results, strict=True):
        _write_probs(out_dir / PROBS_DIR / f"{names[m.name]}.csv", images, classes, r.probs)
    _write_probs(out_dir / PROBS_DIR / f"{ENSEMBLE}.csv", images, classes, combined.probs)
    metrics = _metrics(cfg, members, rule, tta, images, results, combined, plain, classes, seconds, names)
    (out_dir / "metrics.json").write_text(dumps(metrics))
    _log_table(metrics)
    log.info(
        "%d images through %d member(s) in %.1f s (%.0f images/s) -> %s",
        len(images.ids),
        len(members),
        seconds,
        metrics["images_per_s"],
        out_dir / SUBMISSION,
    )
    return Prediction(out_dir, members, metrics)


def _members(cfg: DictConfig, root: Path) -> list[Member]:
    runs = cfg.get("runs") or []
    if isinstance(runs, str):
        runs = [runs]
    study = cfg.get("study_name")
    if not runs and study is None:
        raise config_error(
            "runs",
            [],
            "give the trained runs (runs=[outputs/<exp_name>/latest]) or a study's top trials "
            "(study_name=<study> top_k=3)",
        )
    members = from_runs(list(runs), root)
    if study is not None:
        name = check_name(study, "whose top trials predict")
        view = StudyView.load(name, stored_study_url(name, cfg.get("storage"), root), key="storage")
        members += from_study(view, positive_int(cfg, "top_k"))
    return members


def _on_device(images: torch.Tensor, device: Device, max_gb: float) -> torch.Tensor:
    """On a GPU, the uint8 images go there once when they take at most `max_gb` GiB (a batch is then a
    slice), else they are pinned so each batch copies without blocking."""
    if not device.gpu:
        return images
    if images.nbytes / 2**30 <= max_gb:
        return images.to(device.device)
    return images.pin_memory()


def _file_names(members: Sequence[Member]) -> dict[str, str]:
    return {m.name: path_safe(m.name.replace("/", "__")) for m in members}


def _write_submission(path: Path, images: Images, labels: list[str]) -> None:
    """sample_submission.csv's rows and columns with the target filled in, or `id,target` rows."""
    with path.open("w", newline="") as fh:
        if images.rows is not None and images.columns is not None:
            writer = csv.DictWriter(fh, fieldnames=images.columns)
            writer.writeheader()
            for row, label in zip(images.rows, labels, strict=True):
                writer.writerow({**row, images.target_column: label})
        else:
            writer = csv.writer(fh)
            writer.writerow([images.id_column, images.target_column])
            writer.writerows(zip(images.ids, labels, strict=True))


def _write_probs(path: Path, images: Images, classes: Sequence[str], probs: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([images.id_column, *classes])
        for image_id, row in zip(images.ids, probs.tolist(), strict=True):
            writer.writerow([image_id, *(f"{p:.6g}" for p in row)])


def _scores(labels: torch.Tensor | None, predicted: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Macro F1 and accuracy against the labels, where the input has them."""
    if labels is None:
        return {}
    return {
        "f1": float(multiclass_f1_score(predicted, labels, num_classes=num_classes, average="macro")),
        "acc": float(multiclass_accuracy(predicted, labels, num_classes=num_classes, average="micro")),
    }


def _metrics(
    cfg: DictConfig,
    members: list[Member],
    rule: Any,
    tta: TTA,
    images: Images,
    results: list[Predicted],
    combined: Combined,
    plain: Combined | None,
    classes: Sequence[str],
    seconds: float,
    names: dict[str, str],
) -> dict[str, Any]:
    labels, c = images.labels, len(classes)
    weights = rule.weights(members)
    rows = []
    for m, r, w in zip(members, results, weights, strict=True):
        row: dict[str, Any] = {
            "name": m.name,
            "run_dir": str(m.run_dir),
            "checkpoint": str(m.checkpoint),
            "val_metric": m.metric,
            "val_score": m.val_score,
            "weight": w,
            "probs": f"{PROBS_DIR}/{names[m.name]}.csv",
            "images_per_s": len(images.ids) / r.seconds,
            **_scores(labels, r.probs.argmax(1), c),
        }
        if plain is not None and r.plain is not None:
            row.update({f"{k}_no_tta": v for k, v in _scores(labels, r.plain.argmax(1), c).items()})
        rows.append(row)
    ensemble: dict[str, Any] = {
        "rule": rule.name,
        **combined.notes,
        "probs": f"{PROBS_DIR}/{ENSEMBLE}.csv",
        **_scores(labels, combined.labels, c),
    }
    if plain is not None:
        ensemble.update({f"{k}_no_tta": v for k, v in _scores(labels, plain.labels, c).items()})
    out: dict[str, Any] = {
        "input": {"kind": cfg.input.get("_target_", "").rsplit(".", 1)[-1], "what": images.what},
        "images": len(images.ids),
        "classes": list(classes),
        "labelled": labels is not None,
        "tta": tta.describe(),
        "members": rows,
        "ensemble": ensemble,
        "seconds": seconds,
        "images_per_s": len(images.ids) / seconds if seconds > 0 else math.inf,
        "submission": SUBMISSION,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if labels is not None:
        keys = [k for k in ("f1", "acc", "f1_no_tta", "acc_no_tta") if k in rows[0]]
        out["mean_member"] = {k: _mean([r[k] for r in rows]) for k in keys}
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _log_table(metrics: dict[str, Any]) -> None:
    """Members and the ensemble as a table in the log: what ensembling (and TTA) gained, where labelled."""
    labelled = metrics["labelled"]
    tta = "f1_no_tta" in metrics["ensemble"]
    header = [
        "member",
        "val",
        "weight",
        *(["f1", "acc"] if labelled else []),
        *(["f1 no TTA"] if tta else []),
    ]
    rows = []
    for r in metrics["members"]:
        val = "-" if r["val_score"] is None else f"{r['val_score']:.4f}"
        rows.append(
            [
                r["name"],
                val,
                f"{r['weight']:.3f}",
                *([f"{r['f1']:.4f}", f"{r['acc']:.4f}"] if labelled else []),
                *([f"{r['f1_no_tta']:.4f}"] if tta else []),
            ]
        )
    e = metrics["ensemble"]
    if labelled:
        mean = metrics["mean_member"]
        rows.append(
            ["mean of members", "", "", f"{mean['f1']:.4f}", f"{mean['acc']:.4f}"]
            + ([f"{mean['f1_no_tta']:.4f}"] if tta else [])
        )
    rows.append(
        [
            f"ensemble ({e['rule']})",
            "",
            "",
            *([f"{e['f1']:.4f}", f"{e['acc']:.4f}"] if labelled else []),
            *([f"{e['f1_no_tta']:.4f}"] if tta else []),
        ]
    )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for line in [header, *rows]:
        log.info("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    if e.get("below_min_agree"):
        log.info(
            "%d image(s) had fewer than %d agreeing votes: labelled by the mean probability",
            e["below_min_agree"],
            e["min_agree"],
        )
