"""Run the benchmark scenarios on loopback and print their figures beside their goals.

    python -m bench            # the default sizes (see SIZES); writes docs/bench-latency.png
    python -m bench --smoke    # tiny sizes: checks that everything still works

Every live scenario runs chatapp, the floor (a bare pub/sub relay) and, where it can
hold the load, the peer (flask-sse) one after another in the same run, with the same
paced model, the same load client and the same gunicorn gevent settings (bench/systems.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.load import Outcome, Plan, Watching, percentile
from bench.paced_model import paced_model
from bench.producers import run_publishers
from bench.search import SearchRun, load_average, search_run
from bench.systems import FLUSH_MS, SYSTEMS, Running, start_answers, started
from bench.worker import WorkerRun, worker_runs, worker_table, worker_targets
from chatapp import store
from chatapp.incremental import IncrementalRenderer
from chatapp.producer import delta_entry
from chatapp.render import render_markdown
from harness.accounts import sign_up
from harness.client import parse_events
from harness.page import Page
from harness.servers import RedisServer, rq_worker, stack_env, web_server

SIZES: dict[str, dict[str, Any]] = {
    "smoke": {
        "viewers": 20, "answers": 2, "held_viewers": 40, "held_answers": 4, "tokens": 60,
        "catch_up_tokens": 300, "joins": 5, "cost_tokens": 60, "worker_rows": "smoke",
        "search_chats": 20, "search_messages": 4, "search_rounds": 3,
    },
    "default": {
        "viewers": 1000, "answers": 20, "held_viewers": 10_000, "held_answers": 100,
        "tokens": 300, "catch_up_tokens": 5000, "joins": 20, "cost_tokens": 300,
        "worker_rows": "default", "search_chats": 1000, "search_messages": 20,
        "search_rounds": 40,
    },
}  # fmt: skip
TOKENS_PER_SECOND = 30.0
PLOT = Path(__file__).resolve().parent.parent / "docs" / "bench-latency.png"


@dataclass
class Live:
    """One system's figures in one live scenario."""

    system: str
    viewers: int
    answers: int
    tokens: int
    outcome: Outcome
    cpu_seconds: float
    redis_connections: tuple[int, int]  # the web process's: pub/sub ones, all
    connect_seconds: float  # until every viewer was on (a process start included)
    final_html_bytes: float = 0.0  # chatapp: an answer's stored markup, on average
    pages_right: tuple[int, int] | None = None  # chat page: (pages as stored, pages checked)

    def p(self, fraction: float) -> float:
        return percentile(self.outcome.latencies_ms, fraction)

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds * 1e6 / max(1, self.outcome.events)

    @property
    def cpu_us_per_token(self) -> float:
        """Server CPU per token delivered to a viewer: the cost of what people read."""
        return self.cpu_seconds * 1e6 / max(1, self.tokens * self.viewers)

    @property
    def kb_per_viewer(self) -> float:
        """What one viewer read of its one answer's stream, keep-alives included."""
        return self.outcome.bytes_read / max(1, self.viewers) / 1024

    @property
    def kb_per_viewer_answer(self) -> float:
        """The same without the chat list, which a chat page's stream also carries."""
        bytes_read = self.outcome.bytes_read - self.outcome.chat_list_bytes
        return bytes_read / max(1, self.viewers) / 1024

    def bytes_goal_kb(self) -> float:
        """The stream issue's bound: the answer's final HTML plus 100 bytes per token."""
        return (self.final_html_bytes + 100 * self.tokens) / 1024

    @property
    def pages(self) -> str:
        return f"{self.pages_right[0]} of {self.pages_right[1]}" if self.pages_right else "-"

    def row(self) -> str:
        o = self.outcome
        return (
            f"| {self.system} | {self.viewers} | {self.answers} | {self.p(0.5):.1f} | "
            f"{self.p(0.9):.1f} | {self.p(0.99):.1f} | {max(o.latencies_ms, default=0):.1f} | "
            f"{o.events} | {o.losses} | {o.duplicates} | {o.unfinished} | {o.reconnects} | "
            f"{self.cpu_us_per_event:.1f} | {self.cpu_us_per_token:.2f} | "
            f"{_connections(self)} | {self.connect_seconds:.1f} | "
            f"{percentile(o.client_lag_ms, 0.99):.1f} | {self.kb_per_viewer:.1f} | {self.pages} |"
        )


LIVE_HEADER = (
    "| system | viewers | answers | p50 ms | p90 ms | p99 ms | max ms | events delivered "
    "| losses | dups | unfinished | reconnects | server CPU µs/event "
    "| server CPU µs/token read | web→Redis connections | s to connect all "
    "| client lag p99 ms | KB read per viewer | pages as stored |\n" + "|---" * 19 + "|"
)


def live(system: str, viewers: int, answers: int, tokens: int, directory: Path) -> Live:
    """`viewers` viewers spread over `answers` answers written at 30 tokens/s."""
    go = threading.Event()
    with (
        paced_model(TOKENS_PER_SECOND, tokens, go) as model_url,
        started(system, directory / system, model_url, answers) as running,
    ):
        host, port = running.base.removeprefix("http://").split(":")
        plan = Plan(
            host, int(port), running.paths, viewers, running.cookies,
            ready_on_headers=system != "peer",  # flask-sse sends nothing before an event
            timeout=tokens / TOKENS_PER_SECOND + 90,
        )  # fmt: skip
        connecting = time.monotonic()
        with _profiled(running, f"{system}-{viewers}-connect"):
            watching = Watching(plan)
            watching.wait_connected(timeout=300)
            if system == "peer":
                _wait_for(lambda: running.subscribers() >= viewers, "flask-sse's subscriptions")
        connect_seconds = time.monotonic() - connecting
        connections = running.redis_connections()
        cpu_before = running.server_cpu_seconds()
        with _profiled(running, f"{system}-{viewers}"):
            go.set()
            outcome = watching.outcome()
        cpu = running.server_cpu_seconds() - cpu_before
        for thread in running.producers:
            thread.join(timeout=30)
        result = Live(system, viewers, answers, tokens, outcome, cpu, connections, connect_seconds)
        if system.startswith("chatapp"):
            stored = running.stored_answers()
            result.final_html_bytes = sum(len(m.html.encode()) for m in stored) / len(stored)
            if system.startswith("chatapp page"):
                result.pages_right = _pages_right(outcome.bodies, running.paths, stored)
    return result


def _pages_right(
    bodies: dict[str, bytes], paths: list[str], stored: list[store.Message]
) -> tuple[int, int]:
    """Apply every event a viewer of each chat page read, as the page does; count the
    pages whose answer then shows exactly its stored markup."""
    right = 0
    for path, message in zip(paths, stored, strict=True):
        try:
            page = Page().apply(parse_events(bodies[path].decode()))
            right += page.shows(message.id, message.html)
        except (AssertionError, ValueError):  # a message twice, a broken event...
            continue
    return right, len(paths)


@contextmanager
def _profiled(running: Running, name: str) -> Iterator[None]:
    """With BENCH_PROFILE=<folder>, record the web process with py-spy meanwhile."""
    folder = os.environ.get("BENCH_PROFILE")
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    output = Path(folder) / f"{name}.txt"
    spy = str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--nonblocking", "--format", "raw", "-r", "200"]
    command += ["-p", str(running.worker_pid), "-o", str(output)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=30)


def _wait_for(check, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def catch_up(size: dict[str, Any], directory: Path, running_answer: bool) -> list[float]:
    """Viewers joining one at a time an answer of `catch_up_tokens` log entries (one per
    token, as a 30 tokens/s answer writes them), finished or still being written: request
    to the last byte of what was written before (ms, each join)."""
    with (
        paced_model(TOKENS_PER_SECOND, 1) as model_url,
        started("chatapp", directory, model_url, 1, produce=False) as running,
    ):
        _, chat_id, _, message_id, _ = running.paths[0].strip("/").split("/")
        r = redis.Redis.from_url(running.redis_url, decode_responses=True)
        write_log(r, chat_id, message_id, size["catch_up_tokens"], finish=not running_answer)
        host, port = running.base.removeprefix("http://").split(":")
        plan = Plan(
            host, int(port), running.paths, size["joins"], running.cookies,
            one_at_a_time=True, until_caught_up=True,
        )  # fmt: skip
        outcome = Watching(plan).outcome()
        if outcome.errors or len(outcome.catch_up_ms) != size["joins"]:
            raise RuntimeError(f"catch-up joins failed: {outcome.errors[:3]}")
        message = store.get_message(r, chat_id, message_id)
        if message is None or message.running != running_answer:
            raise RuntimeError("the answer was not in the state this scenario measures")
    return outcome.catch_up_ms


def write_log(r: redis.Redis, chat_id: str, message_id: str, tokens: int, finish: bool) -> None:
    """Write an answer's log as its producer does, one entry per token (the most entries
    such an answer can have), through the same fenced append, then end it if `finish`."""
    message = store.get_message(r, chat_id, message_id)
    assert message is not None
    renderer, entries, text, length = IncrementalRenderer(), [], [], 0
    for number in range(tokens):
        token = ("word " if number % 5 else "ts0000000000000000 ") + ("\n\n" * (number % 40 == 39))
        renderer.feed(token)
        text.append(token)
        piece = renderer.flush()
        entries.append(delta_entry(piece))
        if len(entries) == 100 or number == tokens - 1:
            length = store.append(r, chat_id, message_id, message.gen, entries, length).length
            entries = []
    if finish:
        whole = "".join(text)
        done = store.Terminal("done", text=whole, html=render_markdown(whole))
        store.append(r, chat_id, message_id, message.gen, [], length, done)


@dataclass
class Cost:
    """The Redis commands one answer cost, as MONITOR saw them."""

    system: str
    sent: Counter[str]  # commands the clients sent, by name: each one a request
    in_scripts: int  # commands run inside Lua scripts (no request of their own)
    tokens: int
    entries: int = 0  # log entries written (chatapp: one per flush, then the end)

    def row(self) -> str:
        total = sum(self.sent.values())
        top = ", ".join(f"{name} {calls}" for name, calls in self.sent.most_common(5))
        return (
            f"| {self.system} | {self.tokens} | {self.entries or '-'} | {total} | "
            f"{total / self.tokens:.2f} | {self.in_scripts} | {top} |"
        )


COST_HEADER = (
    "| system | tokens | log entries | commands sent per answer | per token "
    "| run inside scripts | most sent |\n" + "|---" * 7 + "|"
)


class CommandLog:
    """Counts, with MONITOR, the commands Redis runs, apart from those of `ignore` (an
    address: our own polls)."""

    def __init__(self, url: str, ignore: str = "") -> None:
        self.url, self.ignore = url, ignore
        self.sent: Counter[str] = Counter()
        self.in_scripts = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def __enter__(self) -> CommandLog:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        redis.Redis.from_url(self.url).echo(self.STOP)  # the last command it counts
        self._thread.join(timeout=10)

    STOP = "bench: stop counting"

    def _listen(self) -> None:
        with redis.Redis.from_url(self.url).monitor() as monitor:
            self._ready.set()
            while True:
                command = monitor.next_command()
                if self.STOP in command["command"]:
                    return
                name = command["command"].split(" ", 1)[0].lower()
                if command.get("client_type") == "lua":
                    self.in_scripts += 1
                elif f"{command['client_address']}:{command['client_port']}" != self.ignore:
                    self.sent[name] += 1


def redis_cost(size: dict[str, Any], directory: Path) -> list[Cost]:
    """Redis commands one answer costs, with no viewers: chatapp's real RQ worker (the
    request that asks for the answer included) and the peer's per-token `sse.publish`."""
    tokens = size["cost_tokens"]
    return [_chatapp_cost(tokens, directory / "chatapp"), _peer_cost(tokens, directory / "peer")]


def _chatapp_cost(tokens: int, directory: Path) -> Cost:
    directory.mkdir(parents=True)
    server = RedisServer(directory)
    env = stack_env(
        server.url, directory, OPENAI_API_KEY="bench", CHATAPP_AUTO_TITLES="off",
        CHATAPP_FLUSH_MS=str(FLUSH_MS),
    )  # fmt: skip
    try:
        with paced_model(TOKENS_PER_SECOND, tokens) as model_url:
            env["OPENAI_BASE_URL"] = model_url
            with (
                rq_worker(env),
                web_server(env) as (base, _),
                httpx.Client(base_url=base, timeout=30) as http,
            ):
                token = sign_up(http)
                r = redis.Redis.from_url(server.url)
                with CommandLog(server.url, ignore=r.client_info()["addr"]) as log:
                    (path,) = start_answers(http, token, 1)
                    _, chat_id, _, message_id, _ = path.strip("/").split("/")
                    key = store.message_key(chat_id, message_id)
                    time.sleep(tokens / TOKENS_PER_SECOND)
                    while r.hget(key, "status") in (b"queued", b"streaming"):
                        time.sleep(0.5)
                    time.sleep(1)  # the job's own last bookkeeping
                entries = sum(r.llen(key) for key in r.keys("chatapp:v1:*:gen:*:log"))
    finally:
        server.stop()
    return Cost("chatapp", log.sent, log.in_scripts, tokens, entries)


def _peer_cost(tokens: int, directory: Path) -> Cost:
    directory.mkdir(parents=True)
    server = RedisServer(directory)
    try:
        with paced_model(TOKENS_PER_SECOND, tokens) as model_url, CommandLog(server.url) as log:
            for thread in run_publishers("peer", model_url, server.url, 1):
                thread.join(timeout=tokens / TOKENS_PER_SECOND + 30)
    finally:
        server.stop()
    return Cost("peer (flask-sse)", log.sent, log.in_scripts, tokens)


@dataclass
class Report:
    size: dict[str, Any]
    latency: list[Live]  # each of SYSTEMS: `viewers` over `answers`
    held: list[Live]  # chatapp page, floor: `held_viewers` over `held_answers`
    finished_catch_up: list[float]
    running_catch_up: list[float]
    costs: list[Cost]
    workers: list[WorkerRun]
    search: SearchRun

    def text(self) -> str:
        lines = [
            "Live: token emitted by the model -> byte read by a viewer (30 tokens/s per answer)"
        ]
        lines += ["", LIVE_HEADER, *(live.row() for live in self.latency + self.held)]
        lines += [
            "",
            "Answers written at once by one worker process",
            "",
            worker_table(self.workers),
        ]
        lines += ["", self.search.table()]
        lines += ["", "Redis cost of one answer, no viewers", "", COST_HEADER]
        lines += [cost.row() for cost in self.costs]
        lines += ["", "Targets", "", *self.targets()]
        for live in self.latency + self.held:
            if live.outcome.errors:
                errors = Counter(live.outcome.errors).most_common(3)
                lines.append(f"\n{live.system}, {live.viewers} viewers: errors {errors}")
        return "\n".join(lines)

    def targets(self) -> list[str]:
        size = self.size
        chatapp, page, usual, floor, peer = self.latency
        held_page, held_floor = self.held
        finished = percentile(self.finished_catch_up, 0.5)
        running = percentile(self.running_catch_up, 0.5)
        chatapp_cost, peer_cost = self.costs
        appends = chatapp_cost.sent["evalsha"]
        rows = [
            "| target | goal | chatapp | floor | peer |",
            "|---|---|---|---|---|",
            f"| viewers held on the chat page, {held_page.answers} answers "
            f"| {size['held_viewers']}, nothing lost | {_held(held_page)} | {_held(held_floor)} "
            "| not run: one Redis "
            "connection per viewer |",
            f"| p99, {chatapp.viewers} viewers over {chatapp.answers} answers | ≤ 100 ms "
            f"| {chatapp.p(0.99):.1f} ms (chat page: {page.p(0.99):.1f} ms) "
            f"| {floor.p(0.99):.1f} ms | {peer.p(0.99):.1f} ms |",
            f"| web→Redis connections at {chatapp.viewers} / {held_page.viewers} viewers "
            f"| one pub/sub per process | {_connections(chatapp)} / "
            f"{_connections(held_page)} | {_connections(floor)} / "
            f"{_connections(held_floor)} | {_connections(peer)} / - |",
            f"| catch-up p50, finished {size['catch_up_tokens']}-token answer | ≤ 50 ms "
            f"| {finished:.1f} ms | no replay | no replay |",
            f"| catch-up p50, running answer ({size['catch_up_tokens']} tokens written) "
            f"| ≤ 50 ms | {running:.1f} ms | no replay | no replay |",
            f"| Redis requests per flush | one | {appends} scripts for {chatapp_cost.entries} "
            f"entries; {sum(chatapp_cost.sent.values())} per answer, everything included | - | "
            f"{sum(peer_cost.sent.values())} per answer ({peer_cost.tokens} tokens) |",
            f"| server CPU per event vs floor, {chatapp.viewers} / {held_page.viewers} "
            f"viewers (chat page) | ≤ 2x | {_ratio(page.cpu_us_per_event, floor.cpu_us_per_event)}"
            f" / {_ratio(held_page.cpu_us_per_event, held_floor.cpu_us_per_event)} (answer "
            f"stream: {_ratio(chatapp.cpu_us_per_event, floor.cpu_us_per_event)}) | 1 | "
            f"{_ratio(peer.cpu_us_per_event, floor.cpu_us_per_event)} / - |",
            f"| server CPU per token read vs floor, {chatapp.viewers} / {held_page.viewers} "
            f"viewers (chat page) | - | {_ratio(page.cpu_us_per_token, floor.cpu_us_per_token)}"
            f" / {_ratio(held_page.cpu_us_per_token, held_floor.cpu_us_per_token)} | 1 | "
            f"{_ratio(peer.cpu_us_per_token, floor.cpu_us_per_token)} / - |",
            f"| bytes a viewer reads of a {chatapp.tokens}-token answer | ≤ its final HTML + "
            f"100 B per token ({chatapp.bytes_goal_kb():.1f} KB) | {chatapp.kb_per_viewer:.1f} KB "
            f"(chat page: {page.kb_per_viewer_answer:.1f} KB, and {page.kb_per_viewer:.1f} KB "
            f"with the chat list; pages showing the stored answer: "
            f"{page.pages}) | {floor.kb_per_viewer:.1f} KB "
            f"| {peer.kb_per_viewer:.1f} KB |",
            f"| p99 vs floor, {chatapp.viewers} / {held_page.viewers} viewers (chat page) "
            f"| ≤ 2x / ≤ 1x | {_ratio(page.p(0.99), floor.p(0.99))} / "
            f"{_ratio(held_page.p(0.99), held_floor.p(0.99))} (answer stream: "
            f"{_ratio(chatapp.p(0.99), floor.p(0.99))}) | 1 | "
            f"{_ratio(peer.p(0.99), floor.p(0.99))} / - |",
            f"| chat page without the express lane (baseline): p99, CPU per event vs floor, "
            f"{usual.viewers} viewers | - | {usual.p(0.99):.1f} ms, "
            f"{_ratio(usual.cpu_us_per_event, floor.cpu_us_per_event)} (with it: "
            f"{page.p(0.99):.1f} ms, {_ratio(page.cpu_us_per_event, floor.cpu_us_per_event)}) "
            "| 1 | - |",
            *worker_targets(self.workers),
            self.search.target(),
        ]
        return rows

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
        for panel, group in zip(panels, (self.latency, self.held), strict=True):
            for live in group:
                values = sorted(live.outcome.latencies_ms)
                if values:
                    share = [(n + 1) / len(values) for n in range(len(values))]
                    panel.plot(values, share, label=f"{live.system} (p99 {live.p(0.99):.0f} ms)")
            first = group[0]
            panel.set_title(f"{first.viewers} viewers over {first.answers} answers")
            panel.set_xscale("log")
            panel.set_xlabel("token emitted → byte at viewer (ms, log scale)")
            panel.grid(True, which="both", alpha=0.3)
            panel.legend(loc="lower right")
        panels[0].set_ylabel("share of tokens")
        figure.suptitle("chatapp, the floor (bare relay) and the peer (flask-sse), same run")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)


def _held(live: Live) -> str:
    o = live.outcome
    return (
        f"{live.viewers - o.unfinished} of {live.viewers}, {o.losses} lost, "
        f"p99 {live.p(0.99):.0f} ms"
    )


def _connections(live: Live) -> str:
    subscribed, total = live.redis_connections
    return f"{subscribed} pub/sub of {total}"


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor > 0 else "-"


def run_all(size: dict[str, Any], directory: Path) -> Report:
    """Every scenario, one after another, each on its own fresh servers."""
    latency = [
        live(system, size["viewers"], size["answers"], size["tokens"], directory / "live")
        for system in SYSTEMS
    ]
    held = held_rows(size, directory / "held")
    finished = catch_up(size, directory / "finished", running_answer=False)
    running = catch_up(size, directory / "running", running_answer=True)
    costs = redis_cost(size, directory / "cost")
    workers = worker_runs(size["worker_rows"], directory / "workers")
    found = searches(size, directory / "search")
    return Report(size, latency, held, finished, running, costs, workers, found)


def searches(size: dict[str, Any], directory: Path) -> SearchRun:
    chats, messages = size["search_chats"], size["search_messages"]
    return search_run(directory, chats, messages, size["search_rounds"])


def held_rows(size: dict[str, Any], directory: Path) -> list[Live]:
    """The chat page and the floor at `held_viewers` over `held_answers`."""
    return [
        live(system, size["held_viewers"], size["held_answers"], size["tokens"], directory)
        for system in ("chatapp page", "floor")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it works")
    parser.add_argument("--plot", type=Path, default=PLOT, help="where to write the plot")
    parser.add_argument("--workers", action="store_true", help="only the answer-worker rows")
    parser.add_argument(
        "--live",
        action="store_true",
        help="only the rows of viewers on running answers (the chat page, the per-answer "
        "stream, the floor), a few minutes: to compare two versions of the web tier",
    )
    parser.add_argument("--search", action="store_true", help="only the search rows")
    parser.add_argument(
        "--held",
        action="store_true",
        help="only the rows of the most viewers (the chat page, the floor)",
    )
    args = parser.parse_args()
    size = SIZES["smoke" if args.smoke else "default"]
    if args.live:
        with tempfile.TemporaryDirectory() as scratch:
            rows = [
                live(system, size["viewers"], size["answers"], size["tokens"], Path(scratch))
                for system in ("chatapp page", "chatapp page, no express", "chatapp", "floor")
            ]
        print(LIVE_HEADER, *(row.row() for row in rows), sep="\n")
        page, usual, answer, floor = rows
        print(
            f"chat page, p99: {page.p(0.99):.1f} ms, {_ratio(page.p(0.99), floor.p(0.99))} the "
            f"floor's; without the express lane {usual.p(0.99):.1f} ms, "
            f"{_ratio(usual.p(0.99), floor.p(0.99))}; CPU per event "
            f"{_ratio(page.cpu_us_per_event, floor.cpu_us_per_event)} the floor's, without "
            f"{_ratio(usual.cpu_us_per_event, floor.cpu_us_per_event)}"
        )
        print(
            f"bytes a viewer reads of a {page.tokens}-token answer: chat page "
            f"{page.kb_per_viewer_answer:.1f} KB without the chat list (goal: its final HTML "
            f"+ 100 B per token, {page.bytes_goal_kb():.1f} KB), per-answer stream "
            f"{answer.kb_per_viewer:.1f} KB, floor {floor.kb_per_viewer:.1f} KB"
        )
        print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        return
    if args.held:
        with tempfile.TemporaryDirectory() as scratch:
            rows = held_rows(size, Path(scratch))
        print(LIVE_HEADER, *(row.row() for row in rows), sep="\n")
        print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        return
    if args.search:
        with tempfile.TemporaryDirectory() as scratch:
            found = searches(size, Path(scratch))
        print(found.table(), "", "| target | goal | chatapp |", "|---|---|---|", sep="\n")
        print(found.target().rsplit(" - | - |", 1)[0], load_average(), sep="\n")
        return
    if args.workers:
        with tempfile.TemporaryDirectory() as scratch:
            runs = worker_runs(size["worker_rows"], Path(scratch))
        print(worker_table(runs), "", "| target | goal | chatapp |", "|---|---|---|", sep="\n")
        print(*worker_targets(runs), sep="\n")
        return
    with tempfile.TemporaryDirectory() as scratch:
        report = run_all(size, Path(scratch))
    print(report.text())
    report.plot(args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
