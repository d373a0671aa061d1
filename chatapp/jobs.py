"""RQ jobs. Module-level functions taking ids; they write only through the store.

They run in RQ's forked work horse, inside the app context that `rq_worker.py` pushed.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import redis
from flask import current_app
from rq import Callback, Queue, RateLimit, get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.rate_limit import RateLimitRegistry
from rq.timeouts import JobTimeoutException

from chatapp import contract, prompt, providers, store, titles, waiting
from chatapp.connections import get_append_client, get_queue, get_redis, get_small_queue
from chatapp.heartbeat import Heartbeat
from chatapp.job_context import in_app_context
from chatapp.job_progress import Progress
from chatapp.producer import Fenced, Producer
from chatapp.streaming_model import Model, Thinking

log = logging.getLogger(__name__)

TITLE_SHOWN = 60  # characters of a chat's title in its answer jobs' descriptions


def enqueue_answer(
    queue: Queue,
    chat_id: str,
    message_id: str,
    generation_id: str,
    asker: str,
    title: str,
    owner: str = "",
) -> Job:
    """Queue the job that writes one generation of an answer. Its description, shown on the
    job dashboard, names who asked in which chat; the worker adds the model it uses.

    With `owner`, RQ's rate limit keeps at most `MAX_RUNNING_PER_USER` of the owner's answer
    jobs queued or running: the others wait in RQ's rate-limited registry, and the job of
    one of theirs that ends puts the next on the queue."""
    config = current_app.config
    short = title if len(title) <= TITLE_SHOWN else title[: TITLE_SHOWN - 1] + "…"
    limit = RateLimit(f"chatapp-answers-{owner}", config["MAX_RUNNING_PER_USER"]) if owner else None
    # Listed as waiting before its job exists: the sweep for jobs taken off the queue
    # leaves a just-listed answer alone for a while (waiting.py).
    waiting.add(queue, job_id(generation_id), chat_id, message_id, generation_id)
    job = queue.enqueue(
        generate_answer,
        chat_id,
        message_id,
        generation_id,
        job_id=job_id(generation_id),
        job_timeout=config["JOB_TIMEOUT_SECONDS"],
        description=f"answer for {asker} in “{short}” (chat {chat_id}, message {message_id})",
        on_failure=Callback(on_answer_failure),
        result_ttl=3600,
        failure_ttl=86_400,
        rate_limit=limit,
    )
    if limit is not None:
        _expire_when_unused(queue, limit, config)
    return job


def _expire_when_unused(queue: Queue, limit: RateLimit, config: Any) -> None:
    """RQ keeps a rate limit's keys (named after the user) until its maintenance finds
    them empty; they go by themselves once the last job that used them cannot still run."""
    registry = RateLimitRegistry(limit.key, queue.connection)
    longest = int(longest_answer_seconds(config))
    with queue.connection.pipeline(transaction=False) as pipe:
        for key in (registry.config_key, registry.allowed_key, registry.rate_limited_key):
            pipe.expire(key, longest)
        pipe.execute()


def longest_answer_seconds(config: Any) -> float:
    """The longest an answer can be queued or written, with an hour to spare."""
    return float(config["QUEUE_WAIT_SECONDS"] + config["JOB_TIMEOUT_SECONDS"] + 3600)


def job_id(generation_id: str) -> str:
    """Return the RQ job id of a generation: one job per generation, whoever enqueues it."""
    return f"answer-{generation_id}"


def not_run_because(message: store.Message | None, generation_id: str) -> str:
    """Why a job will not write its answer: it was stopped, deleted or written again
    before the job ran, or it is a requeued job (dashboard, `rq requeue`) of an answer
    that ended. Its chat's Regenerate writes it again, live on every screen."""
    if message is None:
        return "not run: the chat or the answer was deleted"
    if message.gen != generation_id:
        return "not run: the answer was written again since; a newer job writes it"
    return (
        f"not run: this answer already ended ({message.status}); "
        "use Regenerate in the chat to write it again"
    )


@in_app_context
def generate_answer(chat_id: str, message_id: str, generation_id: str) -> str:
    """Stream the model's answer into the generation's log; return how it ended."""
    config = current_app.config
    r = get_redis()
    waiting.remove(get_queue(), job_id(generation_id), chat_id, message_id, generation_id)
    chat, history = store.get_chat_and_messages(r, chat_id)
    message = next((message for message in history if message.id == message_id), None)
    if message is None or message.gen != generation_id or not message.running:
        return not_run_because(message, generation_id)  # shown as the job's result
    timing = timing_from(config)
    writer = get_append_client()  # appends of every answer of the process, batched
    running = current_app.extensions.get("answers_running", lambda: 1)  # the worker's load
    producer = Producer(
        writer, chat_id, message_id, generation_id, config["FLUSH_MS"] / 1000, timing, running
    )
    system_prompt = prompt.system_prompt_of(chat, config)
    context = prompt.build_context(history, message_id, system_prompt, config["CONTEXT_CHARS"])
    model = providers.make_model(config, message.model)  # the chat's pick, when it was sent
    if model.name != message.model:  # this worker's model, which may not be the web's
        store.set_model(r, chat_id, message_id, model.name)
    progress = Progress(get_current_job())
    progress.name_model(model.name)
    progress.note("waiting for the model", 0, last=True)
    heartbeat = Heartbeat(
        writer,
        chat_id,
        message_id,
        generation_id,
        config["HEARTBEAT_SECONDS"],
        timing,
        on_fenced=model.close,
        appended_at=lambda: producer.appended_at,
    )
    with heartbeat:
        try:
            for piece in model.stream(context):
                if heartbeat.fenced.is_set():
                    raise Fenced("ended", producer.length)
                if isinstance(piece, Thinking):
                    producer.think(piece)
                else:
                    producer.feed(piece)
                progress.note("writing", producer.length)
                producer.wait_for_window(model.whole_reads)  # the next read takes the rest
            if heartbeat.fenced.is_set():
                raise Fenced("ended", producer.length)
            counted = usage_fields(model)
            unfinished = why_unfinished(model, producer.length)
            if unfinished:
                producer.fail(unfinished, counted)
                progress.ended("failed", producer.length)
                return "unfinished"
            producer.finish(counted)
            progress.ended("done", producer.length)
        except Fenced as fenced:
            log.info("answer %s: stopped producing (%s)", message_id, fenced.status)
            progress.ended(fenced.status, producer.length)
            return fenced.status
        except Exception as exc:
            if heartbeat.fenced.is_set():  # the model's stream was closed under it
                log.info("answer %s: stopped producing (stream closed)", message_id)
                progress.ended("ended", producer.length)
                return "ended"
            producer.fail(describe_failure(exc, config))
            progress.ended("failed", producer.length)  # its error entry counted too
            raise
    if titles.wanted(config, history, message_id):
        _enqueue_title(r, chat_id)
    return "done"


def _enqueue_title(r: redis.Redis, chat_id: str) -> None:
    """Queue the job that titles the chat; the answer is done whatever happens to it."""
    chat = store.get_chat(r, chat_id)
    try:
        if chat is not None:
            titles.enqueue(get_small_queue(), chat_id, chat.title)
    except Exception:
        log.exception("chat %s: could not queue its title", chat_id)


def timing_from(config: Any) -> store.Timing:
    return store.Timing(
        heartbeat_ms=int(config["HEARTBEAT_TTL_SECONDS"] * 1000),
        retention_seconds=int(config["RETENTION_SECONDS"]),
    )


@in_app_context
def on_answer_failure(
    job: Job,
    connection: Any,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """RQ failure callback: make sure a failed job's generation ends with an `error`."""
    message = "The answer could not be finished (the job failed)."
    if exc is not None:
        message = describe_failure(exc, current_app.config)
    end_with_error(job, message)


def end_with_error(job: Job, message: str) -> None:
    """End the answer that an answer job writes with an `error` (other jobs: nothing)."""
    if job.func_name != f"{__name__}.generate_answer":
        return
    chat_id, message_id, generation_id = job.args
    terminal = store.Terminal(contract.ERROR, message=message)
    timing = timing_from(current_app.config)
    store.end(get_redis(), chat_id, message_id, generation_id, terminal, timing)


def end_if_producer_dead(job: Job) -> None:
    """End the answer that an answer job writes if its producer stopped beating (its worker
    was killed): nothing happens while it is alive (other jobs: nothing)."""
    if job.func_name != f"{__name__}.generate_answer":
        return
    chat_id, message_id, _ = job.args
    r = get_redis()
    message = store.get_message(r, chat_id, message_id)
    if message is not None:
        store.end_if_dead(r, chat_id, message, timing_from(current_app.config))


def usage_fields(model: Model) -> dict[str, str]:
    """The tokens the model server counted for the answer, as its message keeps them."""
    if model.usage is None:
        return {}
    prompt_tokens, answer_tokens = model.usage
    return {"prompt_tokens": str(prompt_tokens), "answer_tokens": str(answer_tokens)}


INCOMPLETE = {
    "length": "The answer was cut off: the model reached its length limit.",
    "cut": "The answer was cut off: the model server closed the stream before the end.",
    "content_filter": "The model server held back the rest of the answer (content filter).",
}


def why_unfinished(model: Model, written: int) -> str:
    """Return why a stream that ended is not a complete answer, or "" when it is one."""
    if model.tool_calls and not written:
        return "The model asked to use a tool instead of answering; chatapp runs no tools."
    if model.ending in ("stop", "tool_calls"):
        return ""
    default = f"The model stopped before finishing the answer ({model.ending})."
    return INCOMPLETE.get(model.ending, default)


def describe_failure(exc: BaseException, config: Any) -> str:
    """Return what a person should read when an answer fails."""
    if isinstance(exc, AbandonedJobError):  # its worker died (RQ found it in its registry)
        return store.DEAD_PRODUCER
    if isinstance(exc, redis.exceptions.OutOfMemoryError):  # at maxmemory, with noeviction
        return "The server's storage is full, so the answer could not be finished. Try later."
    if isinstance(exc, JobTimeoutException):
        return f"The answer took longer than the {config['JOB_TIMEOUT_SECONDS']} s limit."
    import openai  # here: the web processes, which enqueue answers, never need it

    from chatapp import openai_model

    if isinstance(exc, openai_model.ModelError):
        return f"The model server reported an error: {exc}"
    if isinstance(exc, openai_model.ModelSilent | openai.APITimeoutError):
        return f"The model server sent nothing for {config['MODEL_TIMEOUT_SECONDS']:g} s."
    if isinstance(exc, openai.APIConnectionError):
        return "Could not reach the model server."  # its address is the operator's business
    if isinstance(exc, openai.AuthenticationError):
        return "The model server refused the API key."
    if isinstance(exc, openai.RateLimitError):
        return "The model server is rate limiting requests; try again in a moment."
    if isinstance(exc, openai.APIStatusError):
        said = openai_model.error_text(exc.body) if exc.body else ""
        return f"The model server answered with an error ({exc.status_code})" + (
            f": {said}" if said else "."
        )
    return f"The answer failed ({type(exc).__name__})."
