"""Launching: how a trial's job runs and is stopped, apart from the study's ask / start / wait / tell.

- `jobs`: a Hydra job (context, singletons, task function) packed for another process
- `executors`: run trial N as Hydra job N, in a process of its own (forked from a clean fork server, with
  its beat, stall and orphan watching) or in batches through any Hydra launcher; the outcome a job sends
  back
- `ranks`: the extra DDP ranks of a trial, which run the trial's own command
  (`python -m sweeplab.launching.ranks <job dir>`), never the sweep's
- `interrupts`: SIGINT and SIGTERM as clean stops of a sweep and of the trials it runs

Nothing here imports Lightning or `sweeplab.training`.
"""
