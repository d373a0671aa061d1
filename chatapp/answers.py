"""Starting and stopping answers: what a send, a regeneration and a stop do, behind the views.

A send stores the message and its queued answer (`send.lua`), then queues the job that
writes the answer. Around that: the per-user cap (a person's answers running or waiting),
answers whose producer died (ended, so they neither block the chat nor count), and a resend
of the same message (stored once, queued once).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from flask import current_app
from rq.job import Job

from chatapp import contract, jobs, models, store
from chatapp.connections import get_queue, get_redis
from chatapp.render import plain_text, render_message
from chatapp.store import Chat, Message


class Refused(Exception):
    """The answer was not started; `str()` says why, for the person who asked."""


def send(
    chat: Chat, client_id: str, text: str, asker: str, replaces: str = ""
) -> tuple[store.SendResult, list[Message]]:
    """Store the message and start its answer, within its owner's cap (raises Refused).
    Return the store's result and, once stored, the question and its answer. `replaces`:
    the question this one is a new version of (an edit; see store.send_message)."""
    r = get_redis()

    def start(behind: bool) -> store.SendResult:
        return _store_message(r, chat, client_id, text, behind, replaces)

    sent = _within_cap(r, chat, start)
    if sent.status not in ("ok", "duplicate"):
        return sent, []
    question = store.get_message(r, chat.id, sent.user_id)
    answer = store.get_message(r, chat.id, sent.answer_id)
    if answer is not None:
        _enqueue_unless_queued(r, chat, answer, asker)
    return sent, [message for message in (question, answer) if message is not None]


def start_chat(owner: str, client_id: str, text: str, asker: str) -> str:
    """Start a chat with its first message and return its id (the chat this message
    started already, when it is sent again). Refused (the user's cap): nothing stays."""
    r = get_redis()
    chat_id = store.new_id()
    if started := store.claim_new_chat(r, owner, client_id, chat_id):
        return started  # a resend
    chat = store.create_chat(r, owner, time.time(), chat_id=chat_id)
    try:
        send(chat, client_id, text, asker)
    except Refused:
        store.delete_chat(r, chat, timing())
        store.forget_new_chat(r, owner, client_id)
        raise
    return chat.id


def regenerate(chat: Chat, answer_id: str, asker: str) -> store.SendResult:
    """Write the chat's last answer again (a new version of it), within its owner's cap
    (raises Refused)."""
    r = get_redis()
    config = current_app.config

    def attempt(behind_own: bool) -> store.SendResult:
        label, wait_ms = chat_model(chat), config["QUEUE_WAIT_SECONDS"] * 1000
        return store.regenerate(r, chat.id, answer_id, label, time.time(), wait_ms, behind_own)

    again = _within_cap(r, chat, attempt)
    answer = store.get_message(r, chat.id, again.answer_id) if again.status == "ok" else None
    if answer is not None:
        _enqueue_unless_queued(r, chat, answer, asker)
    return again


def stop(chat: Chat, answer: Message) -> None:
    """End the answer where it is, if it is still being written."""
    if answer.running:
        store.end(
            get_redis(), chat.id, answer.id, answer.gen, store.Terminal(contract.STOPPED), timing()
        )


def timing() -> store.Timing:
    """The configured heartbeat limit and log retention, for the ends written here."""
    return jobs.timing_from(current_app.config)


def _within_cap(
    r: redis.Redis, chat: Chat, start: Callable[[bool], store.SendResult]
) -> store.SendResult:
    """Start an answer (`start`) unless the chat's owner already has as many answers
    running or waiting as they may. Past `MAX_RUNNING_PER_USER` the answer is queued behind
    the owner's own (RQ's rate limit starts it when one of theirs ends) and says so from
    the moment it is stored (`start(behind_own)`): every screen shows the same. A
    per-user lock makes the count and the start one step, so racing sends from several
    tabs or devices cannot each see room for one more.
    """
    config = current_app.config
    lock = r.lock(store.user_lock_key(chat.owner), timeout=10, blocking_timeout=10)
    if not lock.acquire():
        raise Refused("Your other messages are still being sent. Try again in a moment.")
    try:
        live = _live_answers(r, chat.owner)
        # Read under the lock: a send into a chat whose answer is running is refused by
        # the store (or replaces a dead one) without adding to the count.
        now = store.get_chat(r, chat.id)
        busy = now.running if now else ""
        if live >= config["MAX_RUNNING_PER_USER"] + config["MAX_WAITING_PER_USER"] and not busy:
            raise Refused(
                f"You have {live} answers being written or waiting already. Wait for one to "
                "finish, or stop one, then send again."
            )
        return start(live >= config["MAX_RUNNING_PER_USER"])
    finally:
        lock.release()


def chat_model(chat: Chat) -> str:
    """The model the chat's next answer uses: the one its owner picked, while it is offered."""
    config = current_app.config
    return chat.model if models.still_offered(config, chat.model) else models.default_model(config)


def _live_answers(r: redis.Redis, owner: str) -> int:
    """Count the owner's answers that are still being written, ending any whose job died."""
    longest = jobs.longest_answer_seconds(current_app.config)
    live = 0
    for chat_id, answer_id in store.running_answers(r, owner, time.time() - longest):
        answer = store.get_message(r, chat_id, answer_id)
        if answer is not None and not store.end_if_dead(r, chat_id, answer, timing()):
            live += 1
    return live


def _store_message(
    r: redis.Redis, chat: Chat, client_id: str, text: str, behind_own: bool, replaces: str
) -> store.SendResult:
    """Store the message; if the chat is busy with an answer whose producer died, end that."""
    config = current_app.config
    chat_id, label = chat.id, chat_model(chat)
    wait_ms = config["QUEUE_WAIT_SECONDS"] * 1000
    html = render_message(text)
    title = plain_text(html)

    def attempt() -> store.SendResult:
        return store.send_message(
            r,
            chat_id,
            client_id,
            text,
            html,
            label,
            time.time(),
            wait_ms,
            title,
            max_messages=config["MAX_CHAT_MESSAGES"],
            behind_own=behind_own,
            replaces=replaces,
        )

    sent = attempt()
    if sent.status == "busy":
        running = store.get_message(r, chat_id, sent.answer_id)
        if running is not None and store.end_if_dead(r, chat_id, running, timing()):
            sent = attempt()
    return sent


def _enqueue_unless_queued(r: redis.Redis, chat: Chat, answer: Message, asker: str) -> None:
    """Queue the answer's job, unless it is queued already (a resend of the same message).

    The job id is the generation's, so a resend after a failure between storing the
    message and queueing its job (a crash, a Redis blip) queues it now, and only once.
    """
    if answer.status != "queued":
        return
    queue = get_queue()
    if Job.exists(jobs.job_id(answer.gen), connection=queue.connection):
        return
    now = store.get_chat(r, chat.id)  # a first message titled it
    title = now.title if now else chat.title
    try:
        jobs.enqueue_answer(queue, chat.id, answer.id, answer.gen, asker, title, chat.owner)
    except Exception:
        reason = "The answer could not be queued. Send the message again."
        terminal = store.Terminal(contract.ERROR, message=reason)
        store.end(r, chat.id, answer.id, answer.gen, terminal, timing())
        raise
