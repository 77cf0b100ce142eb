"""The first module the trials' fork server imports, and only there: it turns the garbage collector off
for the imports that follow (torch, Lightning, timm make millions of objects that live as long as the
process; collections walking them as they are made cost seconds, BENCHMARKS.md "start-up"), and imports
what opening a study storage imports on first use (`storage.warm`), which every trial's job does. Each
trial's process freezes what it inherited and turns the collector back on (`executors._child`)."""

import contextlib
import gc

gc.disable()
with contextlib.suppress(Exception):  # an optimisation: the server must start whatever happens here
    from sweeplab.search.storage import warm

    warm()
