"""The garbage collector's settings (chatapp/heap.py), in this process."""

import gc
from collections.abc import Iterator

import pytest

from chatapp import heap, metrics


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    gc.callbacks[:] = callbacks


def full_passes() -> float:
    """How many full passes the pause histogram has counted."""
    for family in metrics.GC_PAUSE.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels["generation"] == "2":
                return sample.value
    return 0.0


def test_settling_freezes_what_the_process_made_and_times_each_pass(
    restored_collector: None,
) -> None:
    made_at_start = [object() for _ in range(10)]
    heap.settle()
    assert gc.get_freeze_count() > 10 and gc.get_threshold()[0] == heap.YOUNG_GENERATION
    assert not any(o is made_at_start for o in gc.get_objects())  # no pass walks them
    before = full_passes()
    gc.collect()
    assert full_passes() == before + 1
    heap.settle()  # again (a reload): one callback, not two
    gc.collect()
    assert full_passes() == before + 2
