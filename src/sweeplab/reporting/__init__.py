"""What a study or a multirun leaves for people: result files, plots, reports, exported presets, summaries."""

from sweeplab.reporting.study_report import StudyReport, write_study_report
from sweeplab.reporting.view import StudyView

__all__ = ["StudyReport", "StudyView", "write_study_report"]
