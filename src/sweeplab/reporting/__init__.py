"""What a study or a multirun leaves for people: result files, plots, reports, exported presets, summaries."""

from sweeplab.reporting.study_report import StudyReport, write_study_report

__all__ = ["StudyReport", "write_study_report"]
