"""The benchmark's smoke run (tiny sizes): every scenario still runs end to end, for
chatapp, the floor and the peer, and every viewer got every entry once. Its timings are
printed, never asserted (these machines are shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import SIZES, run_all


@pytest.mark.timeout(900)  # every scenario, each on fresh servers, on a busy machine
def test_the_benchmark_runs_and_every_viewer_gets_everything_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"  # the servers' temporary files
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    size = SIZES["smoke"]
    report = run_all(size, tmp_path / "runs")
    assert not list(temp.glob("chatapp-metrics-*"))  # every gunicorn removed its own
    print("\n" + report.text())
    for live in report.latency + report.held:
        outcome = live.outcome
        assert (outcome.losses, outcome.duplicates, outcome.unfinished) == (0, 0, 0), live.system
        # Every viewer measured every stamp it did not get in a snapshot: at least one each.
        assert len(outcome.latencies_ms) >= live.viewers, live.system
        assert live.cpu_seconds > 0
    systems = [live.system for live in report.latency]
    assert systems == ["chatapp", "chatapp page", "chatapp page, no express", "floor", "peer"]
    chatapp, page, usual, floor, peer = report.latency
    assert page.pages_right == usual.pages_right == (page.answers, page.answers)
    assert chatapp.redis_connections[0] == floor.redis_connections[0] == 1  # one pub/sub each
    assert peer.redis_connections[0] == peer.viewers  # flask-sse: one per viewer
    assert len(report.finished_catch_up) == len(report.running_catch_up) == size["joins"]
    chatapp_cost, peer_cost = report.costs
    # One script call per log entry written (plus the send, the heartbeats and the rest).
    assert chatapp_cost.sent["evalsha"] >= chatapp_cost.entries > 0
    assert peer_cost.sent["publish"] == size["cost_tokens"] + 1  # every token, and the end
    for run in report.workers:  # every answer written, by RQ's forking worker and by ours
        assert len(run.burst_first_token_ms) == run.answers and run.append_ms, run.worker
        assert run.cpu_seconds > 0
    assert [run.worker for run in report.workers] == ["rq worker", "rq_worker.py"]
    assert len(report.workers[1].added_first_token_ms) == 10  # the probes, one at a time
    report.plot(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")
