"""`runners/report.py`: check the arguments, open the study read-only in spirit, write its report."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig

from sweeplab.config import positive_int
from sweeplab.errors import config_error
from sweeplab.hydra_errors import composing
from sweeplab.reporting.export import Flattener
from sweeplab.reporting.pick import pick_trial
from sweeplab.reporting.study_report import StudyReport, write_study_report
from sweeplab.search.naming import path_safe
from sweeplab.search.records import STUDY_CONFIG_NAME, STUDY_SCRIPT
from sweeplab.search.view import StudyView, check_name, stored_study_url

log = logging.getLogger("sweeplab.report")


def report(cfg: DictConfig) -> StudyReport:
    name = check_name(cfg.get("study_name"))
    pruned_top_k = positive_int(cfg, "pruned_top_k")
    root = Path.cwd()
    url = stored_study_url(name, cfg.get("storage"), root)
    view = StudyView.load(name, url, key="storage")
    chosen = cfg.get("pick") or {}
    pick = pick_trial(view, chosen.get("trial"), chosen.get("budget"))
    if pick and not cfg.get("export", True):
        raise config_error(
            "export", False, "pick.trial / pick.budget export a preset; drop export=false or the pick"
        )
    out_dir = Path(cfg.get("out_dir") or Path("reports") / path_safe(name))
    loader = GlobalHydra.instance().config_loader()
    config_name = str(view.attr(STUDY_CONFIG_NAME) or "train")

    def compose(overrides: list[str]) -> DictConfig:
        with composing():
            return loader.load_configuration(
                config_name=config_name, overrides=overrides, run_mode=RunMode.RUN
            )

    flattener = Flattener(compose, str(view.attr(STUDY_SCRIPT) or "runners/train.py"))
    result = write_study_report(
        view,
        out_dir,
        flattener,
        root,
        pruned_top_k=pruned_top_k,
        export=bool(cfg.get("export", True)),
        pick=pick,
    )
    log.info(
        "study %s: %d trials (%d running); report %s",
        name,
        len(view.trials),
        view.counts["RUNNING"],
        result.files["report_html"],
    )
    if result.preset:
        log.info("best trial exported: %s", result.preset.command)
    elif result.retrain:
        log.info("retrain the best trial: %s", result.retrain)
    if result.pick and result.picked:
        log.info(
            "trial %d exported (%s): %s", result.pick.trial.number, result.pick.reason, result.picked.command
        )
        if result.pick.dominated_by is not None:
            log.warning(
                "trial %d is not on the Pareto front: trial %d is at least as good in every objective",
                result.pick.trial.number,
                result.pick.dominated_by,
            )
    for note in result.notes:
        log.warning("not produced: %s", note)
    return result
