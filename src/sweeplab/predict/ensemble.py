"""How the members' class probabilities become one prediction per image. Each rule is an `ensemble` config
option: the mean of the probabilities (the default), a mean weighted by each member's validation score, or
a majority vote that needs a minimum agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sweeplab.errors import SweeplabError, config_error
from sweeplab.predict.members import Member


@dataclass
class Combined:
    probs: torch.Tensor  # (N, C): the ensemble's class probabilities (a vote: each class's share of votes)
    labels: torch.Tensor  # (N,): the predicted class of each image
    notes: dict[str, Any] = field(default_factory=dict)  # what metrics.json records about the rule


def equal_weights(members: Sequence[Member]) -> list[float]:
    return [1.0 / len(members)] * len(members)


class MeanProbs:
    """The mean of the members' softmax probabilities; the class with the highest mean wins."""

    name = "mean"

    def check(self, members: Sequence[Member]) -> None:
        """Refuse, before any model is loaded, what this rule cannot combine."""

    def weights(self, members: Sequence[Member]) -> list[float]:
        return equal_weights(members)

    def combine(self, probs: torch.Tensor, members: Sequence[Member]) -> Combined:
        """`probs`: (M, N, C), one row of probabilities per member and image."""
        w = torch.tensor(self.weights(members), dtype=probs.dtype, device=probs.device).view(-1, 1, 1)
        mean = (probs * w).sum(0)
        return Combined(mean, mean.argmax(1), {"weights": self.weights(members)})


class WeightedProbs(MeanProbs):
    """The mean of the members' probabilities weighted by their validation scores: proportional to the
    score for a metric to maximise (val/f1), to its inverse for one to minimise (val/loss)."""

    name = "weighted"

    def check(self, members: Sequence[Member]) -> None:
        metrics = {(m.metric, m.mode) for m in members}
        if len(metrics) > 1:
            raise config_error(
                "ensemble",
                self.name,
                f"weights by one validation metric, but the members optimised {sorted(metrics)}; use ensemble=mean",
            )
        for m in members:
            if m.val_score is None or not math.isfinite(m.val_score) or m.val_score <= 0:
                raise config_error(
                    "ensemble",
                    self.name,
                    f"needs a validation score > 0 for every member; {m.name} has {m.val_score} "
                    f"({m.metric}); use ensemble=mean",
                )

    def weights(self, members: Sequence[Member]) -> list[float]:
        raw = [
            float(m.val_score) if m.mode == "max" else 1.0 / float(m.val_score)  # type: ignore[arg-type]
            for m in members
        ]
        return [r / sum(raw) for r in raw]


class Vote:
    """Each member votes for its most probable class. The class with the most votes wins; a tie between
    classes with as many votes goes to the one with the higher mean probability. An image whose winner has
    fewer than `min_agree` votes takes the mean-probability class instead (metrics.json counts them)."""

    name = "vote"

    def __init__(self, min_agree: int | None = None) -> None:
        if min_agree is not None and (isinstance(min_agree, bool) or not isinstance(min_agree, int)):
            raise config_error("ensemble.min_agree", min_agree, "must be a whole number of members, or null")
        self.min_agree = min_agree

    def weights(self, members: Sequence[Member]) -> list[float]:
        return equal_weights(members)  # one vote each

    def needed(self, members: Sequence[Member]) -> int:
        """`min_agree`, or a majority of the members when it is null."""
        return self.min_agree if self.min_agree is not None else len(members) // 2 + 1

    def check(self, members: Sequence[Member]) -> None:
        if not 1 <= self.needed(members) <= len(members):
            raise config_error(
                "ensemble.min_agree",
                self.min_agree,
                f"must lie between 1 and the number of members ({len(members)})",
            )

    def combine(self, probs: torch.Tensor, members: Sequence[Member]) -> Combined:
        m, n, c = probs.shape
        if m != len(members):
            raise SweeplabError(f"{m} members' probabilities for {len(members)} members")
        votes = torch.zeros(n, c, dtype=probs.dtype, device=probs.device)
        votes.scatter_add_(1, probs.argmax(2).T, torch.ones(n, m, dtype=probs.dtype, device=probs.device))
        mean = probs.mean(0)
        top = votes.max(1, keepdim=True).values
        # among the classes with the most votes, the one with the highest mean probability
        winner = torch.where(votes == top, mean, torch.full_like(mean, -1.0)).argmax(1)
        agreed = votes.gather(1, winner[:, None])[:, 0] >= self.needed(members)
        labels = torch.where(agreed, winner, mean.argmax(1))
        notes = {
            "min_agree": self.needed(members),
            "below_min_agree": int((~agreed).sum()),  # images labelled by the mean probability instead
            "unanimous": int((top[:, 0] == m).sum()),
        }
        return Combined(votes / m, labels, notes)
