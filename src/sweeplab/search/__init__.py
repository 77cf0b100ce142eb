"""Search: the sweeper's side of a study, and the little a job needs to report to its trial.

In the order a trial passes through them:

- `plan`: `hydra.sweeper` (typed by `schema.SweeplabSweeperConf`; names and folders in `naming`) and the job config → a checked plan
- `space`: Hydra's sweep grammar ↔ Optuna distributions; a trial's params → the job's overrides
- `pruning`: samplers and pruners from their configs; the guard around a pruner; which pruned trials to rescue
- `opening`: create the study, or load it and check it against the plan
- `loop`: ask → start → wait → tell until the study has its trials, consulting `stopping` (the stop
  rules), `rescue` (pruned trials run again), `coordination` (sweeps sharing the study) and `status`
  (the console line); `sweeplab.launching` runs each trial's job
- `trial`: in the job, the trial it is and its heartbeats (`training.callbacks.PruningCallback` reports)

Beside them: `records` (every attribute sweeplab stores and the counting rules), `storage` (where a study
lives, how it is opened), `view` (a study read back for its trials, best, front and metrics: what reports
and prediction read), `optuna_access` (the only code that touches Optuna's private attributes).
Nothing here imports Lightning or `sweeplab.training`.
"""
