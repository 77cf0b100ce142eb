"""Prediction with trained models: members (runs or a study's top trials), inputs (held-out split, a folder,
the competition layout), test-time augmentation, ensembles, and the files a submission needs."""

from sweeplab.predict.runner import Prediction, predict

__all__ = ["Prediction", "predict"]
