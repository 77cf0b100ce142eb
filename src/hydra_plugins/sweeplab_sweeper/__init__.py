"""sweeplab's Hydra sweeper plugin: Optuna studies with per-epoch pruning, on current Optuna."""
