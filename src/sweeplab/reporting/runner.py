"""`runners/report.py`: check the arguments, open the study read-only in spirit, write its report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
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
from sweeplab.search.records import STUDY_COMMAND, STUDY_CONFIG_DIR, STUDY_CONFIG_NAME, STUDY_SCRIPT
from sweeplab.search.space import override_key
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
    flattener = Flattener(_app_composer(view), str(view.attr(STUDY_SCRIPT) or "runners/train.py"))
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


def _app_composer(view: StudyView) -> Callable[[list[str]], DictConfig]:
    """Composes the config of the app the study swept, as its sweep did: its primary config from the config
    dir the study recorded, on the search path its command gave (`hydra.searchpath=[...]`). A study stored
    before the dir was recorded is composed from this runner's search path (sweeplab's own configs)."""
    config_dir = view.attr(STUDY_CONFIG_DIR)
    if config_dir and not _missing_dir(str(config_dir)):
        loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(config_dir)))
    else:
        loader = GlobalHydra.instance().config_loader()
    config_name = str(view.attr(STUDY_CONFIG_NAME) or "train")
    searchpath = [a for a in view.attr(STUDY_COMMAND) or [] if override_key(a) == "hydra.searchpath"]

    def compose(overrides: list[str]) -> DictConfig:
        with composing():
            return loader.load_configuration(
                config_name=config_name, overrides=[*searchpath, *overrides], run_mode=RunMode.RUN
            )

    return compose


def _missing_dir(config_dir: str) -> bool:
    """A recorded `file://` config dir that is gone (the project moved): then this runner's search path."""
    return config_dir.startswith("file://") and not Path(config_dir.removeprefix("file://")).is_dir()
