"""Two objectives to minimize at once: the task returns one float per direction."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="pareto")
def pareto(cfg: DictConfig) -> tuple[float, float]:
    return cfg.x**2 + cfg.y**2, (cfg.x - 2) ** 2 + (cfg.y - 2) ** 2


if __name__ == "__main__":
    pareto()
