"""Many answers at once in one answer-worker process: the deployment's own `rq_worker.py`
(as `make run` starts it), fed by the paced model, with no web tier in the way.

Each row: `answers` questions queued at the same moment, answered at 30 tokens/s. Measured:
- added time to first token: from queueing the job to its first entry in Redis, minus the
  model's own time from being asked to its first token, for `PROBES` questions asked one
  at a time while the row's answers are all running; and when the last of the burst got
  its first token;
- token emitted -> appended: the model stamps every fifth token with the time it sent it;
  Redis's clock stamps each published flush (`at`, ms); read on a sample of the answers;
- worker CPU per token: the worker process's CPU time over the run / tokens written; and
  over `STEADY_SECONDS` in which every answer of the row runs (none starts or ends), per
  token the model sent meanwhile: the cost of writing alone, without each answer's start
  (its job, its request to the model) and end;
- worker memory per running answer: its RSS with every answer running, minus its RSS idle
  (after one warm-up answer), / answers.
The baseline, in the same run: RQ's own forking `rq worker` (one answer at a time, a fork
and a fresh import per answer) on the same questions.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
from rq import Queue, Worker

from bench.load import percentile
from bench.paced_model import SHAPES, PacedServer, recorded_paced_model
from chatapp import contract, create_app, store
from chatapp.config import DEFAULTS, from_environ
from chatapp.connections import get_queue
from chatapp.jobs import enqueue_answer
from chatapp.producer import FULL_SPEED_ANSWERS
from harness.servers import PROJECT_DIR, RedisServer, stack_env, wait_until

TOKENS_PER_SECOND = 30.0
FLUSH_MS = DEFAULTS["FLUSH_MS"]
SAMPLED = 20  # answers whose every flush is timed (the rest: their first only)
PROBES = 10  # one more question at a time while the burst runs: its added first-token time
PROBE_EVERY_SECONDS = 0.3
STEADY_SECONDS = 2.0
STAMP = re.compile(r"ts(\d+)")


@dataclass
class WorkerRun:
    """One row: how one worker process (or the forking baseline) wrote `answers` at once."""

    worker: str
    answers: int
    tokens: int
    burst_first_token_ms: list[float]  # the `answers` queued at once
    added_first_token_ms: list[float]  # the probes: one more person asks while they run
    append_ms: list[float]
    cpu_seconds: float
    rss_growth_kb: float
    seconds: float
    tokens_written: int
    steady_cpu_seconds: float = 0.0  # while every answer runs (0: no such moment)
    steady_tokens: int = 0
    shape: str = "paragraphs"
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu_seconds * 1e6 / max(1, self.tokens_written)

    @property
    def steady_cpu_us_per_token(self) -> str:
        if not self.steady_tokens:
            return "-"
        return f"{self.steady_cpu_seconds * 1e6 / self.steady_tokens:.0f}"

    @property
    def kb_per_answer(self) -> float:
        return self.rss_growth_kb / max(1, self.answers)

    def row(self) -> str:
        first, append = self.added_first_token_ms, self.append_ms
        added = (
            f"{percentile(first, 0.5):.0f} | {percentile(first, 0.99):.0f}" if first else "- | -"
        )
        return (
            f"| {self.worker} | {self.answers} | {self.tokens} | {self.shape} | {added} | "
            f"{max(self.burst_first_token_ms, default=0) / 1000:.1f} | "
            f"{percentile(append, 0.99):.1f} | "
            f"{self.cpu_us_per_token:.0f} | {self.steady_cpu_us_per_token} | "
            f"{self.kb_per_answer:.0f} | "
            f"{self.seconds:.1f} | {' '.join(f'{x:.2f}' for x in self.load)} |"
        )


HEADER = (
    "| worker | answers at once | tokens each | shape | added first token p50 ms | p99 ms "
    "| last of the burst to see a first token s | token → Redis p99 ms | worker CPU µs/token "
    "| … while all run | worker KB per running answer | s to write all "
    "| load average 1/5/15 min |\n" + "|---" * 13 + "|"
)


def worker_run(
    worker: str,
    answers: int,
    tokens: int,
    directory: Path,
    shape: str = "paragraphs",
    tokens_per_second: float = TOKENS_PER_SECOND,
) -> WorkerRun:
    """Queue `answers` questions at once for one `worker` process ("rq_worker.py", or
    "rq worker" for RQ's forking one); measure it writing them all."""
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory)
    try:
        with recorded_paced_model(tokens_per_second, tokens, shape) as (model_url, model):
            env = stack_env(
                server.url,
                directory,
                OPENAI_API_KEY="bench",
                OPENAI_BASE_URL=model_url,
                CHATAPP_AUTO_TITLES="off",
                CHATAPP_WORKER_CONCURRENCY=str(max(answers + PROBES, 100)),  # a slot each
                CHATAPP_QUEUE_WAIT_SECONDS="3600",
                CHATAPP_JOB_TIMEOUT_SECONDS="3600",
            )
            with _worker_process(worker, env) as process:
                run = _measure(worker, answers, tokens, env, process, model)
                run.shape = shape
                return run
    finally:
        server.stop()


def _measure(
    worker: str,
    answers: int,
    tokens: int,
    env: dict[str, str],
    process: psutil.Process,
    model: PacedServer,
) -> WorkerRun:
    app = create_app(from_environ(env))
    probes = PROBES if worker == "rq_worker.py" else 0
    with app.app_context():
        queue = get_queue()
        r = redis.Redis.from_url(env["REDIS_URL"], decode_responses=True)
        wait_until(lambda: Worker.count(queue=queue) > 0, timeout=60, what="the worker")
        _wait_answered(r, [_queue(r, queue, "warm-up")])  # imports and clients made once
        rss_idle = process.memory_info().rss
        chats = [store.create_chat(r, "0" * 16, time.time()).id for _ in range(answers + probes)]
        with _Appends(env["REDIS_URL"], chats) as appends:
            cpu_before, started = _cpu(process), time.monotonic()
            queued = [_queue(r, queue, f"question {n}", chats[n]) for n in range(answers)]
            rss_running = _rss_while_all_run(process, appends, answers)
            steady_cpu, steady_tokens = _cpu_while_all_run(process, model)
            for n in range(answers, answers + probes):  # one more person asks, now and then
                queued.append(_queue(r, queue, f"question {n}", chats[n]))
                time.sleep(PROBE_EVERY_SECONDS)
            _wait_answered(r, queued)
            seconds, cpu = time.monotonic() - started, _cpu(process) - cpu_before
        added = [
            (appends.first[chat] - at) * 1000 - _model_own_ms(model.asked[f"question {n}"])
            for n, (chat, _, at) in enumerate(queued)
        ]
    growth_kb = max(0, rss_running - rss_idle) / 1024
    return WorkerRun(
        worker,
        answers,
        tokens,
        burst_first_token_ms=added[:answers],
        added_first_token_ms=added[answers:],
        append_ms=appends.latencies_ms,
        cpu_seconds=cpu,
        rss_growth_kb=growth_kb,
        seconds=seconds,
        tokens_written=len(queued) * tokens,
        steady_cpu_seconds=steady_cpu,
        steady_tokens=steady_tokens,
    )


def _model_own_ms(times: tuple[float, float]) -> float:
    asked_at, first_sent = times
    return (first_sent - asked_at) * 1000


def _queue(
    r: redis.Redis, queue: Queue, question: str, chat_id: str = ""
) -> tuple[str, str, float]:
    """Store `question` and queue its answer's job, as a send does; return (chat id,
    answer id, when it was queued)."""
    chat_id = chat_id or store.create_chat(r, "0" * 16, time.time()).id
    sent = store.send_message(r, chat_id, store.new_id(), question, "", "bench", time.time())
    queued_at = time.time()
    enqueue_answer(queue, chat_id, sent.answer_id, sent.generation_id, "bench", "benchmark")
    return chat_id, sent.answer_id, queued_at


def _wait_answered(r: redis.Redis, queued: list[tuple[str, str, float]]) -> None:
    def all_done() -> bool:
        with r.pipeline(transaction=False) as pipe:
            for chat_id, answer_id, _ in queued:
                pipe.hmget(store.message_key(chat_id, answer_id), "status", "error")
            replies = pipe.execute()
        statuses = [status for status, _ in replies]
        failed = [error for status, error in replies if status in ("error", "stopped")]
        if failed:
            raise RuntimeError(f"{len(failed)} answers did not finish: {failed[0]!r}")
        return all(status == "done" for status in statuses)

    wait_until(all_done, timeout=3600, interval=0.5, what="every answer")


def _rss_while_all_run(process: psutil.Process, appends: _Appends, answers: int) -> int:
    """The worker's largest RSS while every answer is being written."""
    wait_until(lambda: len(appends.first) >= answers, timeout=3600, what="every first token")
    return max(_sample_rss(process) for _ in range(5))


def _cpu_while_all_run(process: psutil.Process, model: PacedServer) -> tuple[float, int]:
    """The worker's CPU seconds over `STEADY_SECONDS` and the tokens the model sent
    meanwhile, if no answer ended in between (else none: 0, 0)."""
    finished, sent, cpu = model.finished, model.sent, _cpu(process)
    time.sleep(STEADY_SECONDS)
    if model.finished != finished:
        return 0.0, 0
    return _cpu(process) - cpu, model.sent - sent


def _sample_rss(process: psutil.Process) -> int:
    time.sleep(0.2)
    return int(process.memory_info().rss)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


class _Appends(threading.Thread):
    """Listens to the answers' channels: when each answer's first entry was appended (Redis's
    clock), and, for a sample, how long each stamped token took from the model to Redis."""

    def __init__(self, redis_url: str, chats: list[str]) -> None:
        super().__init__(daemon=True)
        self.pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.channels = {store.channel(chat): chat for chat in chats}
        self.sampled = set(list(self.channels)[:SAMPLED])
        self.first: dict[str, float] = {}  # chat id -> epoch seconds
        self.latencies_ms: list[float] = []
        self.done = threading.Event()

    def __enter__(self) -> _Appends:
        self.pubsub.subscribe(*self.channels)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=10)
        self.pubsub.close()

    def run(self) -> None:
        while not self.done.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is not None:
                self._note(message["channel"].decode(), contract.decode(message["data"]))

    def _note(self, channel: str, published: contract.Published | None) -> None:
        if not isinstance(published, contract.AnswerEntries):
            return  # a chat event
        at_ms = published.appended_ms
        chat = self.channels[channel]
        if chat not in self.first:
            self.first[chat] = at_ms / 1000
            if channel not in self.sampled:
                self.pubsub.unsubscribe(channel)  # its first entry is all this one needs
        for entry in published.entries:
            for stamp in STAMP.findall(entry.text):
                self.latencies_ms.append(at_ms - int(stamp) / 1000)


@contextmanager
def _worker_process(worker: str, env: dict[str, str]) -> Iterator[psutil.Process]:
    if worker == "rq_worker.py":
        command = [sys.executable, "rq_worker.py"]
    else:  # RQ's own forking worker, on the answer queue
        command = [sys.executable, "-m", "rq.cli", "worker", "--url", env["REDIS_URL"]]
        command.append(env["CHATAPP_QUEUE_NAME"])
    process = subprocess.Popen(
        command, cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    folder = os.environ.get("BENCH_PROFILE")  # record the worker with py-spy meanwhile
    spy = None
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        output = Path(folder) / f"worker-{process.pid}.txt"
        spy_command = [str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking"]
        spy_command += ["--format", "raw", "-r", "200", "-p", str(process.pid), "-o", str(output)]
        spy = subprocess.Popen(spy_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield psutil.Process(process.pid)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# (worker, answers at once, tokens each). The forking baseline and the same questions for
# rq_worker.py first, with short answers (the baseline writes them one after another).
ROWS = {
    "smoke": [("rq worker", 3, 20), ("rq_worker.py", 3, 20)],
    "default": [
        ("rq worker", 20, 60),
        ("rq_worker.py", 20, 60),
        ("rq_worker.py", 1, 300),
        ("rq_worker.py", 20, 300),
        ("rq_worker.py", 100, 300),
        ("rq_worker.py", 500, 300),
    ],
}
# Answers of 20,000 characters in one block each, whose open block a renderer pays the square
# of (and plain paragraphs): worker CPU per token for each shape. Faster than people read
# (200 tokens/s), so that each row takes seconds, not minutes.
SHAPE_ANSWERS, SHAPE_TOKENS, SHAPE_TOKENS_PER_SECOND = 10, 4000, 200.0


def worker_runs(size: str, directory: Path) -> list[WorkerRun]:
    """Every row of `ROWS[size]`, then (default size) every shape, each on fresh servers."""
    runs = [
        worker_run(worker, answers, tokens, directory / f"{number}")
        for number, (worker, answers, tokens) in enumerate(ROWS[size])
    ]
    if size == "default":
        runs += [
            worker_run(
                "rq_worker.py",
                SHAPE_ANSWERS,
                SHAPE_TOKENS,
                directory / shape,
                shape=shape,
                tokens_per_second=SHAPE_TOKENS_PER_SECOND,
            )
            for shape in SHAPES
        ]
    return runs


def worker_table(runs: list[WorkerRun]) -> str:
    return "\n".join([HEADER, *(run.row() for run in runs)])


def worker_targets(runs: list[WorkerRun]) -> list[str]:
    """The issue's goals, as rows of the targets table (chatapp's column only)."""
    shaped = {run.shape: run for run in runs if run.tokens == SHAPE_TOKENS}
    runs = [run for run in runs if run.tokens != SHAPE_TOKENS]
    ours = [run for run in runs if run.worker == "rq_worker.py"]
    most = max(ours, key=lambda run: run.answers)
    fork = next(run for run in runs if run.worker == "rq worker")
    same = next(run for run in ours if (run.answers, run.tokens) == (fork.answers, fork.tokens))
    hundred = next((run for run in ours if run.answers == 100), most)
    single = min(ours, key=lambda run: run.answers)
    return [
        f"| answers written at once by one worker process | 500 | {most.answers}, all done |",
        f"| added time to first token, one more asking while {hundred.answers} run "
        "| p50 ≤ 30 ms, p99 ≤ 100 ms "
        f"| p50 {percentile(hundred.added_first_token_ms, 0.5):.0f} ms, "
        f"p99 {percentile(hundred.added_first_token_ms, 0.99):.0f} ms |",
        f"| token → Redis p99, {most.answers} at once | ≤ 2x the flush window "
        f"({2 * FLUSH_MS} ms; {2 * _window_ms(most.answers):.0f} ms as it widens at "
        f"{most.answers}) | {percentile(most.append_ms, 0.99):.1f} ms |",
        f"| worker CPU per token, {most.answers} at once: over the whole run, with each "
        "answer's start and end (while all run; 1 at once) | ≤ 50 µs "
        f"| {most.cpu_us_per_token:.0f} µs ({most.steady_cpu_us_per_token} µs; "
        f"{single.cpu_us_per_token:.0f} µs) |",
        f"| worker memory per running answer, {most.answers} at once | ≤ 1 MB "
        f"| {most.kb_per_answer:.0f} KB |",
        f"| last of {fork.answers} people to see a first token: RQ's forking worker vs this "
        f"one (baseline, same run) | - | {_last_first_s(fork):.1f} s vs "
        f"{_last_first_s(same):.1f} s |",
        *_shape_targets(shaped),
    ]


def _shape_targets(shaped: dict[str, WorkerRun]) -> list[str]:
    if "one paragraph" not in shaped:
        return []
    prose = shaped["one paragraph"].cpu_us_per_token
    ratios = ", ".join(
        f"{shape} {run.cpu_us_per_token / prose:.2f}x" for shape, run in shaped.items()
    )
    return [f"| worker CPU per token by shape, vs one paragraph | ≤ 3x | {ratios} |"]


def _window_ms(answers: int) -> float:
    """The producer's flush window with `answers` running in its process (producer.py)."""
    return FLUSH_MS * max(1.0, answers / FULL_SPEED_ANSWERS)


def _last_first_s(run: WorkerRun) -> float:
    return max(run.burst_first_token_ms, default=0) / 1000
