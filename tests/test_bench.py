"""The benchmark's smoke run (tiny sizes): it still runs end to end, and every viewer got
every entry once. Its timings are printed, never asserted (these machines are shared)."""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import SIZES, catch_up, latency


def test_the_benchmark_runs_and_every_viewer_gets_everything_once(tmp_path: Path) -> None:
    size = SIZES["smoke"]
    live = latency(size, tmp_path / "live")
    print(f"\nbench smoke: {live.row()}")
    assert (live.losses, live.duplicates, live.unfinished) == (0, 0, 0)
    # Every viewer measured every stamp it did not get in a snapshot: at least one each.
    assert live.stamps >= size["viewers"]
    assert live.redis_calls_per_answer > 0
    p50, p90 = catch_up(size, tmp_path / "catch-up")
    print(f"bench smoke: catch-up p50 {p50:.1f} ms, p90 {p90:.1f} ms")
    assert p50 > 0 and p90 >= p50
