"""Searching one person's chats at size, through the deployment's web process (gunicorn).

The person has `chats` chats of `messages` messages each (the issue's figure: 1,000 of 20),
stored with the app's own store functions (a send, then its answer's end, as the worker
writes it), in words drawn from a fixed vocabulary with Zipf-like frequencies. Measured,
as the sidebar asks (`GET /search?q=...` with HX-Request), from request to last byte on
loopback, so an upper bound of the server's time:
- the first search, which indexes every chat;
- `rounds` searches of each kind: a common word, a rare word, the beginning of a word, two
  words, a word no chat holds; their p50 and p99;
- the floor: the same request with an empty query (the same endpoint, session, rate limit
  and template, no search), in the same run;
- the load average beside them.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from bench.load import percentile
from chatapp import contract, store, users
from chatapp.store import Terminal
from harness.accounts import new_name, sign_up
from harness.servers import RedisServer, stack_env, web_server

KINDS = ("common word", "rare word", "word begun", "two words", "no match")
SEED = 20_261_207


@dataclass
class SearchRun:
    chats: int
    messages: int
    first_ms: float = 0.0
    floor_ms: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)  # kind -> results of its last search

    def all_ms(self) -> list[float]:
        return [ms for times in self.by_kind.values() for ms in times]

    def table(self) -> str:
        rows = [
            f"Search: one person's {self.chats:,} chats of {self.messages} messages, through "
            "gunicorn (request to last byte on loopback)",
            "",
            "| query | p50 | p99 | results |",
            "|---|---|---|---|",
        ]
        for kind, times in self.by_kind.items():
            rows.append(
                f"| {kind} | {percentile(times, 0.5):.1f} ms | {percentile(times, 0.99):.1f} ms "
                f"| {self.found[kind]} |"
            )
        rows += [
            f"| every kind | {percentile(self.all_ms(), 0.5):.1f} ms "
            f"| {percentile(self.all_ms(), 0.99):.1f} ms | |",
            f"| floor: an empty query | {percentile(self.floor_ms, 0.5):.1f} ms "
            f"| {percentile(self.floor_ms, 0.99):.1f} ms | |",
            f"| the first search (indexes every chat) | {self.first_ms:.0f} ms | | |",
        ]
        return "\n".join(rows)

    def target(self) -> str:
        p50 = percentile(self.all_ms(), 0.5)
        floor = percentile(self.floor_ms, 0.5)
        return (
            f"| search p50, {self.chats:,} chats of {self.messages} messages | ≤ 100 ms "
            f"| {p50:.1f} ms (floor {floor:.1f} ms, {p50 / floor:.1f}x) | - | - |"
        )


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    """Made-up words of two to four syllables, none twice, most frequent first."""
    syllables = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"]
    words: dict[str, None] = {}
    while len(words) < size:
        words["".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))] = None
    return list(words)


def sentence(rng: random.Random, words: list[str], weights: list[float], length: int) -> str:
    return " ".join(rng.choices(words, cum_weights=weights, k=length)).capitalize() + "."


def seed_chats(r: redis.Redis, owner: str, chats: int, messages: int, words: list[str]) -> None:
    """`chats` chats of `messages` messages (questions and answers, each answer ended)."""
    rng = random.Random(SEED)
    weights, total = [], 0.0
    for rank in range(len(words)):
        total += 1 / (rank + 1)
        weights.append(total)
    now = time.time() - chats * 60
    for number in range(chats):
        chat = store.create_chat(r, owner, now + number * 60)
        for turn in range(messages // 2):
            question = sentence(rng, words, weights, rng.randint(6, 20))
            sent = store.send_message(
                r, chat.id, f"bench-{number}-{turn}", question, f"<p>{question}</p>", "m", now
            )
            assert sent.status == "ok", sent
            answer = " ".join(sentence(rng, words, weights, rng.randint(8, 24)) for _ in range(8))
            html = f"<p>{answer}</p>"
            entry = contract.delta_entry(answer, html)
            done = Terminal(contract.DONE, text=answer, html=html, whole=True)
            store.append(r, chat.id, sent.answer_id, sent.generation_id, [entry], 0, done)


def queries(rng: random.Random, words: list[str], rounds: int) -> dict[str, list[str]]:
    common, middle, rare = words[:20], words[200:2000], words[5000:15000]
    return {
        "common word": [rng.choice(common) for _ in range(rounds)],
        "rare word": [rng.choice(rare) for _ in range(rounds)],
        "word begun": [rng.choice(middle)[:3] for _ in range(rounds)],
        "two words": [f"{rng.choice(middle)} {rng.choice(common)[:4]}" for _ in range(rounds)],
        "no match": [f"qx{rng.choice(middle)}" for _ in range(rounds)],
    }


def timed_search(http: httpx.Client, query: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = http.get("/search", params={"q": query}, headers={"HX-Request": "true"})
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text[:200]
    return elapsed, response.text.count("<li><a ")


def search_run(directory: Path, chats: int, messages: int, rounds: int) -> SearchRun:
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory)
    settings = {"CHATAPP_RATE_LIMIT_SEARCH": "1000000 per minute"}  # one person, many queries
    env = stack_env(server.url, directory, **settings)
    rng = random.Random(SEED)
    words = vocabulary(rng)
    run = SearchRun(chats, messages)
    try:
        with web_server(env) as (base, _):
            r = redis.Redis.from_url(server.url, decode_responses=True)
            with httpx.Client(base_url=base, timeout=120) as http:
                name = new_name()
                sign_up(http, name)
                owner: str = r.hget(users.NAMES_KEY, name.lower())  # type: ignore[assignment]
                seed_chats(r, owner, chats, messages, words)
                run.first_ms, _ = timed_search(http, words[0])
                run.floor_ms = [timed_search(http, "")[0] for _ in range(rounds)]
                for kind, asked in queries(rng, words, rounds).items():
                    timed = [timed_search(http, query) for query in asked]
                    run.by_kind[kind] = [ms for ms, _ in timed]
                    run.found[kind] = timed[-1][1]
    finally:
        server.stop()
    return run


def load_average() -> str:
    return "load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
