"""The garbage collector's settings for a process that holds many streams or answers.

CPython's collector stops the whole process while it walks objects, and every stream (or
answer) of a gevent process waits meanwhile. With the defaults, a web process holding
1,000 viewers made a full pass every few seconds, each 100 ms: the slowest tokens of every
viewer at once (docs/performance.md). Two settings, once a process has made what it keeps:

- `gc.freeze()`: the app, its templates and every imported module live as long as the
  process; frozen, no pass walks them again (half of that 100 ms).
- a larger young generation (700 objects by default): a stream's per-event objects die
  by reference counting long before 20,000 more are made, so few survive into the older
  generations, and the full passes, which walk every viewer's objects, come seldom.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from chatapp import metrics

YOUNG_GENERATION = 20_000  # objects made (net) before a pass over the youngest ones
OLDER_GENERATIONS = (10, 10)  # CPython's defaults: passes of one before one of the next


def settle() -> None:
    """Call once the process has made what lives as long as it does (its app, clients)."""
    gc.freeze()
    metrics.GC_FROZEN.set(gc.get_freeze_count())
    gc.set_threshold(YOUNG_GENERATION, *OLDER_GENERATIONS)
    if _time_pause not in gc.callbacks:
        gc.callbacks.append(_time_pause)


_started = 0.0


def _time_pause(phase: str, info: dict[str, Any]) -> None:
    """Record how long each pass stopped the process, by generation (`/metrics`)."""
    global _started
    if phase == "start":
        _started = time.perf_counter()
    else:
        metrics.observe_gc_pause(info["generation"], time.perf_counter() - _started)
