"""An app shaped like lightning-hydra-template: groups that default to `null` (`logger`, `experiment`,
`debug`), an optional group with no file (`local`), a group a command may delete (`~callbacks`), lists.

Its value depends on every part of its config a study can change, so a wrong export shows in the value.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf_nulls", config_name="nulls")
def nulls(cfg: DictConfig) -> float:
    callbacks = len(cfg.get("callbacks") or {})
    return (
        (cfg.x - 1) ** 2 + cfg.model.width / 100 + cfg.trainer.max_epochs / 1000 + callbacks + len(cfg.tags)
    )


if __name__ == "__main__":
    nulls()
