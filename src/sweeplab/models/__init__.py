"""Models: timm backbones wrapped in a LightningModule with torchmetrics."""

from sweeplab.models.backbone import create_backbone, min_input_size
from sweeplab.models.classifier import ImageClassifier

__all__ = ["ImageClassifier", "create_backbone", "min_input_size"]
