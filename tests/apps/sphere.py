"""The app every Hydra sweep tutorial sweeps: a function of x and y that returns a float.

Written the way the stock hydra-optuna-sweeper's users write it; its config selects sweeplab's sweeper.
`z` is only searched through the custom search space hook (`hooks.z_near_x`).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="sphere")
def sphere(cfg: DictConfig) -> float:
    return (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2 + (cfg.z - cfg.x) ** 2


if __name__ == "__main__":
    sphere()
