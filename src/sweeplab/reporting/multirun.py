"""A summary of a plain multirun (e.g. one config over seeds 42,777,2024): each metric's mean, std, min, max.

A Hydra callback records every finished job, failed ones included, beside its output and rewrites the
summary in the sweep dir after each job, so it exists even when a failed job ends the multirun.
sweeplab studies are left out: their sweeper writes a study report instead.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sweeplab.errors import failure
from sweeplab.reporting.analysis import describe
from sweeplab.reporting.dirs import plain_multirun
from sweeplab.reporting.document import Bullets, Heading, Para, Table, to_markdown
from sweeplab.search.view import dumps

log = logging.getLogger("sweeplab.multirun")

RECORD = "job_return.json"
SUMMARY = "multirun_summary"


class MultirunSummary(Callback):
    """Listed under `hydra.callbacks` (conf/hydra/default.yaml). `split_key`: the config key that seeds the
    data split (`data.split_seed`); the summary says whether it moved between jobs, since a spread over seeds
    that also moved the split is not the training seed's alone."""

    def __init__(self, split_key: str | None = None) -> None:
        self.split_key = split_key

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not plain_multirun(config):
            return
        output_dir = Path(str(config.hydra.runtime.output_dir))
        error = None
        if job_return.status != JobStatus.COMPLETED:
            raised = job_return._return_value
            error = failure(raised)
        record = {
            "num": int(config.hydra.job.num),
            "overrides": list(job_return.overrides or []),
            "status": job_return.status.name,
            "error": error,
            "metrics_file": str(_metrics_file(config, output_dir)),
            "split": _split(config, self.split_key),
        }
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / RECORD).write_text(dumps(record))
        write_summary(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not plain_multirun(config):
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        summary = write_summary(sweep_dir)
        if summary is None:
            return
        stats = summary["metrics"]
        shown = list(stats)[:1] + [n for n in stats if n.startswith("test/") and not n.endswith("loss")]
        parts = [
            f"{n} {stats[n]['mean']:.4f} ± {stats[n]['std']:.4f}"
            for n in shown
            if stats[n]["mean"] is not None
        ]
        log.info(
            "multirun summary, %d of %d jobs completed: %s%s -> %s",
            summary["completed"],
            summary["jobs"],
            "; ".join(parts) or "no metrics",
            f"; {_split_note(summary['split'])}" if summary["split"] else "",
            sweep_dir / f"{SUMMARY}.md",
        )


def summarize(sweep_dir: Path) -> dict[str, Any] | None:
    """The summary of every job recorded under `sweep_dir`, or None when none is."""
    records = sorted((json.loads(p.read_text()) for p in sweep_dir.rglob(RECORD)), key=lambda r: r["num"])
    if not records:
        return None
    common = set.intersection(*(set(r["overrides"]) for r in records))
    per_job, columns = [], {}
    for r in records:
        metrics = _job_metrics(Path(r["metrics_file"])) if r["status"] == "COMPLETED" else {}
        columns.update(dict.fromkeys(metrics))
        per_job.append(
            {
                "num": r["num"],
                "overrides": [o for o in r["overrides"] if o not in common],
                "status": r["status"],
                "error": r["error"],
                "metrics": metrics,
            }
        )
    stats = {}
    for name in columns:
        values = [j["metrics"][name] for j in per_job if _finite(j["metrics"].get(name))]
        stats[name] = describe(values)
    return {
        "sweep_dir": str(sweep_dir),
        "common_overrides": sorted(common),
        "jobs": len(records),
        "completed": sum(r["status"] == "COMPLETED" for r in records),
        "failed": [
            {"num": j["num"], "overrides": j["overrides"], "error": j["error"]} for j in per_job if j["error"]
        ],
        "metrics": stats,
        "per_job": per_job,
        "split": _split_summary(records),
    }


def _split(config: DictConfig, key: str | None) -> dict[str, Any] | None:
    """The job's value of the split key, resolved (`${seed}` → the job's seed)."""
    if not key:
        return None
    value = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    return {"key": key, "value": value} if value is not None else None


def _split_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Whether the data split moved between the jobs, and the values it took."""
    splits = [r.get("split") for r in records if r.get("split")]
    if not splits:
        return None
    values = list(dict.fromkeys(s["value"] for s in splits))
    return {"key": splits[0]["key"], "values": values, "moved": len(values) > 1}


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}."


def _split_note(split: dict[str, Any]) -> str:
    """The split in words: moved between the jobs (and how to hold it), or held."""
    key, values = split["key"], split["values"]
    if split["moved"]:
        return (
            f"the data split moved between jobs ({key}: {', '.join(map(str, values))}), so the spread includes "
            f"the split's; add {key}={values[0]} to hold it fixed"
        )
    return f"the data split was the same in every job ({key}={values[0]}): the spread is the runs' alone"


def write_summary(sweep_dir: Path) -> dict[str, Any] | None:
    summary = summarize(sweep_dir)
    if summary is None:
        return None
    (sweep_dir / f"{SUMMARY}.json").write_text(dumps(summary))
    stats = summary["metrics"]
    keys = ("n", "mean", "std", "min", "max")
    blocks = [
        Heading(f"Multirun summary: {summary['completed']} of {summary['jobs']} jobs completed", 1),
        Para(
            f"Common overrides: {' '.join(summary['common_overrides']) or 'none'}. Std is the sample std (n-1)."
        ),
        *([Para(_sentence(_split_note(summary["split"])))] if summary["split"] else []),
        Table(["metric", *keys], [[name, *(s[k] for k in keys)] for name, s in stats.items()]),
        Heading("Jobs"),
        Table(
            ["job", "overrides", "status", *stats],
            [
                [j["num"], " ".join(j["overrides"]), j["status"], *(j["metrics"].get(n) for n in stats)]
                for j in summary["per_job"]
            ],
        ),
    ]
    if summary["failed"]:
        blocks += [
            Heading("Failed jobs"),
            Bullets(
                [f"job {f['num']} ({' '.join(f['overrides'])}): {f['error']}" for f in summary["failed"]]
            ),
        ]
    (sweep_dir / f"{SUMMARY}.md").write_text(to_markdown(blocks, sweep_dir))
    return summary


def _job_metrics(path: Path) -> dict[str, float]:
    """metrics.json → flat numbers: the best epoch's validation metrics, then the test metrics, epochs, time."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    out: dict[str, float] = {}
    best = data.get("best_val") or {}
    first = data.get("optimized_metric")
    if first in best:
        out[first] = best[first]
    out.update({k: v for k, v in best.items() if k not in ("epoch", "model/params") and k != first})
    out.update(data.get("test") or {})
    for key in ("epochs_run", "wall_time_s"):
        if data.get(key) is not None:
            out[key] = data[key]
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}


def _metrics_file(config: DictConfig, output_dir: Path) -> Path:
    where = OmegaConf.select(config, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    return Path(str(where)) / "metrics.json" if where else output_dir / "metrics.json"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
