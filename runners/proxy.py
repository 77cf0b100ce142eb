"""A storage proxy: sweeps and workers on many machines share one database through one pool of connections.

python runners/proxy.py storage=postgresql://user:pw@db-host/optuna host=0.0.0.0 port=13000
python runners/train.py -m hparams_search=optuna hydra.sweeper.storage=grpc://<this host>:13000
"""

import hydra
from omegaconf import DictConfig

from sweeplab.hydra_errors import run_app
from sweeplab.search.proxy import serve


@hydra.main(version_base="1.3", config_path="../conf", config_name="proxy")
def main(cfg: DictConfig) -> None:
    serve(cfg.storage, cfg.host, cfg.port, cfg.storage_retry)


if __name__ == "__main__":
    run_app(main)  # a config mistake Hydra meets while composing: one line
