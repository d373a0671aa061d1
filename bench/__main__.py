"""Run the benchmark scenarios on loopback and print their figures.

    python -m bench            # the default sizes (see SIZES)
    python -m bench --smoke    # tiny sizes: checks that everything still works

Each scenario starts its own redis-server, RQ workers (one per concurrent answer) and a
gunicorn gevent worker, with the paced model server as the OpenAI-compatible backend.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from bench.load import ViewerResult, measure_lag, percentile, view
from bench.paced_model import paced_model
from tests.accounts import sign_up
from tests.servers import RedisServer, rq_worker, stack_env, web_server

SIZES = {
    "smoke": {"viewers": 20, "answers": 2, "tokens": 60, "catch_up_tokens": 300, "joins": 5},
    "default": {"viewers": 400, "answers": 4, "tokens": 300, "catch_up_tokens": 5000, "joins": 20},
}
T = TypeVar("T")
TOKENS_PER_SECOND = 30.0
FLUSH_MS = 50


@dataclass
class Figures:
    name: str
    viewers: int
    answers: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    stamps: int
    losses: int
    duplicates: int
    unfinished: int
    client_lag_p99_ms: float
    redis_calls_per_answer: float

    def row(self) -> str:
        return (
            f"| {self.name} | {self.viewers} | {self.answers} | {self.p50_ms:.1f} | "
            f"{self.p90_ms:.1f} | {self.p99_ms:.1f} | {self.max_ms:.1f} | {self.stamps} | "
            f"{self.losses} | {self.duplicates} | {self.unfinished} | "
            f"{self.client_lag_p99_ms:.1f} | {self.redis_calls_per_answer:.0f} |"
        )


HEADER = (
    "| scenario | viewers | answers | p50 ms | p90 ms | p99 ms | max ms | stamps | losses "
    "| dups | unfinished | client lag p99 ms | Redis calls per answer |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


class Stack:
    """redis-server, `workers` RQ workers and one gunicorn gevent worker, on loopback."""

    def __init__(self, directory: Path, model_url: str, workers: int) -> None:
        self.directory, self.model_url, self.workers = directory, model_url, workers

    def __enter__(self) -> Stack:
        self.exits = ExitStack()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis_server = RedisServer(self.directory)
        self.exits.callback(self.redis_server.stop)
        env = stack_env(
            self.redis_server.url,
            self.directory,
            OPENAI_API_KEY="bench",
            OPENAI_BASE_URL=self.model_url,
            CHATAPP_FLUSH_MS=str(FLUSH_MS),
            CHATAPP_SSE_MAX_PER_PROCESS="15000",
            CHATAPP_WORKER_CONNECTIONS="16000",
        )
        for _ in range(self.workers):
            self.exits.enter_context(rq_worker(env))
        self.base, _ = self.exits.enter_context(web_server(env))
        return self

    def __exit__(self, *exc: object) -> None:
        self.exits.close()

    def redis_calls(self) -> int:
        """Commands Redis has run so far (all clients: workers, web process, viewers)."""
        stats = redis.Redis.from_url(self.redis_server.url).info("commandstats")
        return sum(int(value["calls"]) for value in stats.values())


def start_answers(http: httpx.Client, token: str, count: int) -> list[str]:
    """Send one message in each of `count` new chats; return the answers' stream URLs."""
    urls = []
    for number in range(count):
        chat = http.post("/chats", data={"csrf_token": token}).headers["location"]
        chat_id = chat.rsplit("/", 1)[-1]
        sent = http.post(
            f"/chats/{chat_id}/messages",
            data={"text": f"benchmark {number}", "client_id": f"bench-{number:06d}"},
            headers={"X-CSRFToken": token, "HX-Request": "true"},
        )
        answer_id = sent.text.split('id="answer-', 1)[1][:16]
        urls.append(f"/chats/{chat_id}/messages/{answer_id}/stream")
    return urls


async def watch_all(
    base: str, cookies: httpx.Cookies, urls: list[str], viewers: int
) -> tuple[list[ViewerResult], list[float]]:
    """Open `viewers` viewers, spread over the answers at `urls`; follow all to the end."""
    limits = httpx.Limits(max_connections=viewers + 10, max_keepalive_connections=viewers)
    async with httpx.AsyncClient(base_url=base, cookies=cookies, limits=limits) as client:
        stop, lags = asyncio.Event(), list[float]()
        ticker = asyncio.create_task(measure_lag(stop, lags))
        results = await asyncio.gather(
            *(view(client, urls[number % len(urls)]) for number in range(viewers))
        )
        stop.set()
        await ticker
    return list(results), lags


def latency(size: dict[str, int], directory: Path) -> Figures:
    """Viewers spread over answers written live at 30 tokens/s: token-to-viewer latency."""
    with (
        paced_model(TOKENS_PER_SECOND, size["tokens"]) as model_url,
        Stack(directory, model_url, size["answers"]) as stack,
        httpx.Client(base_url=stack.base, timeout=30) as http,
    ):
        token = sign_up(http)
        before = stack.redis_calls()
        urls = start_answers(http, token, size["answers"])
        viewing = watch_all(stack.base, http.cookies, urls, size["viewers"])
        results, lags = run_in_own_thread(viewing)
        calls = (stack.redis_calls() - before) / size["answers"]
    return summarize("live, 30 tokens/s", size, results, lags, calls)


def run_in_own_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on a fresh event loop in its own thread: the caller's thread may
    have a loop running already (Playwright's, in the test suite)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def summarize(
    name: str, size: dict[str, int], results: list[ViewerResult], lags: list[float], calls: float
) -> Figures:
    latencies = [value for result in results for value in result.latencies_ms]
    return Figures(
        name=name,
        viewers=size["viewers"],
        answers=size["answers"],
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
        stamps=len(latencies),
        losses=sum(result.losses for result in results),
        duplicates=sum(result.duplicates for result in results),
        unfinished=sum(not result.ended for result in results),
        client_lag_p99_ms=percentile(lags, 0.99),
        redis_calls_per_answer=calls,
    )


def catch_up(size: dict[str, int], directory: Path) -> tuple[float, float]:
    """A viewer joining a finished answer of `catch_up_tokens` tokens: request to its end
    (p50 and p90 of `joins` joins, in ms)."""
    with (
        paced_model(5000.0, size["catch_up_tokens"]) as model_url,
        Stack(directory, model_url, 1) as stack,
        httpx.Client(base_url=stack.base, timeout=60) as http,
    ):
        token = sign_up(http)
        (url,) = start_answers(http, token, 1)
        with http.stream("GET", url) as response:  # wait for the answer to finish
            for _ in response.iter_text():
                pass
        times = []
        for _ in range(size["joins"]):
            started = time.perf_counter()
            with http.stream("GET", url) as response:
                body = "".join(response.iter_text())
            assert "event: end" in body
            times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 0.5), percentile(times, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it works")
    size = SIZES["smoke" if parser.parse_args().smoke else "default"]
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        live = latency(size, Path(first))
        join_p50, join_p90 = catch_up(size, Path(second))
    print(HEADER)
    print(live.row())
    print(
        f"\ncatch-up: a viewer joining a finished {size['catch_up_tokens']}-token answer has "
        f"all of it in {join_p50:.1f} ms (p50), {join_p90:.1f} ms (p90), {size['joins']} joins"
    )


if __name__ == "__main__":
    main()
