"""The load client: many SSE viewers on asyncio, measuring what each one receives.

A viewer follows one answer's stream (`/chats/<c>/messages/<m>/stream`) to its `end` and
records, for every stamp (see paced_model.py) it sees first in a `delta`, the time from
the model emitting it to this viewer receiving it. It also checks the sequence numbers:
an entry twice is a duplicate, a jump is a loss. A ticker measures the client's own
scheduling lag, so a saturated client is not mistaken for a slow server.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import httpx

STAMP = re.compile(r"ts(\d{16})")


@dataclass
class ViewerResult:
    latencies_ms: list[float] = field(default_factory=list)
    duplicates: int = 0
    losses: int = 0
    ended: bool = False
    error: str = ""


async def view(client: httpx.AsyncClient, url: str) -> ViewerResult:
    """Follow one answer to its end."""
    result = ViewerResult()
    seen: set[str] = set()
    last_seq: int | None = None
    buffer = ""
    try:
        async with client.stream("GET", url, timeout=120) as response:
            async for chunk in response.aiter_text():
                received_us = time.time_ns() // 1000
                buffer += chunk
                *blocks, buffer = buffer.split("\n\n")
                for block in blocks:
                    kind, event_id, data = _parse(block)
                    if kind in ("delta", "end") and event_id:
                        seq = int(event_id.rsplit(":", 1)[1])
                        if last_seq is not None and seq <= last_seq:
                            result.duplicates += 1
                        elif last_seq is not None and seq > last_seq + 1:
                            result.losses += seq - last_seq - 1
                        last_seq = seq if last_seq is None else max(last_seq, seq)
                    elif kind == "snapshot" and event_id:
                        last_seq = int(event_id.rsplit(":", 1)[1])
                        seen.update(STAMP.findall(data))  # written before we came
                    if kind == "delta":
                        for emitted in STAMP.findall(data):
                            if emitted not in seen:
                                seen.add(emitted)
                                result.latencies_ms.append((received_us - int(emitted)) / 1000)
                    if kind == "end":
                        result.ended = True
                        return result
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    return result


def _parse(block: str) -> tuple[str, str, str]:
    kind, event_id, data = "message", "", []
    for line in block.split("\n"):
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
    return kind, event_id, "\n".join(data)


async def measure_lag(stop: asyncio.Event, lags_ms: list[float], period: float = 0.01) -> None:
    """How late the client's own loop wakes up: its share of any latency measured."""
    while not stop.is_set():
        expected = time.perf_counter() + period
        await asyncio.sleep(period)
        lags_ms.append(max(0.0, (time.perf_counter() - expected) * 1000))


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
