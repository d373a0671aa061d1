"""Searching one's chats: their titles and the text of their messages, as one types.

Each user has a word index in Redis: for every word, the set of their chats that hold it,
and a sorted set of all the words (for prefixes, with ZRANGEBYLEX). The index is brought up
to date when a search needs it, not when a chat changes: a chat's count of events (every
send, answer start and end, rename) is its version, and a search first re-indexes the
chats whose count moved since (a few, typically) and forgets the deleted ones. So no path
that changes a chat (the worker, a stop, the reaper, a deletion) has to remember the index,
and it can never miss one.

Every key of a user's index carries the user's hash tag, so it lives on one Cluster slot.
A search matches chats holding every word of the query as a word's beginning (the last
one being typed), most recently active first.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import redis
from markupsafe import Markup
from redis.commands.core import Script
from redis.exceptions import LockError

from chatapp.store import chat_texts, chat_versions, user_chats_key
from chatapp.store.keys import PREFIX

MAX_QUERY_CHARS = 200
MAX_TERMS = 8
MAX_WORD_CHARS = 40  # longer runs of letters (a hash, a URL's path) are cut to this
MAX_EXPANSIONS = 500  # words one prefix stands for; a one-letter prefix may stand for more
SNIPPET_CHARS = 140
INDEX_BATCH = 50  # chats read per round of pipelines
REFRESH_SECONDS = 60  # the longest a refresh holds its user's lock, and is waited for
WORD = re.compile(r"\w+")

log = logging.getLogger(__name__)
_INDEX_CHAT = Script(None, (Path(__file__).parent / "index_chat.lua").read_bytes())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Found:
    chat_id: str
    title: Markup  # escaped, the words found marked
    snippet: Markup  # where a message holds them (escaped, marked), or empty


def words(text: str) -> list[str]:
    """The words of `text` as the index holds them: lower case, cut to MAX_WORD_CHARS."""
    return [word[:MAX_WORD_CHARS] for word in WORD.findall(text.casefold())]


def search(r: redis.Redis, user_id: str, query: str, limit: int = 20) -> list[Found]:
    """The user's chats that hold every word of `query` (each as a word's beginning), most
    recently active first, at most `limit`."""
    terms = list(dict.fromkeys(words(query)))[:MAX_TERMS]
    if not terms:
        return []
    recent = refresh(r, user_id)
    matching: set[str] | None = None
    for term in terms:
        holding = _chats_with_prefix(r, user_id, term)
        matching = holding if matching is None else matching & holding
    found = [chat_id for chat_id in recent if chat_id in (matching or set())][:limit]
    pattern = re.compile(r"\b(" + "|".join(re.escape(term) for term in terms) + r")\w*", re.I)
    texts = chat_texts(r, found)
    return [_found(chat_id, texts[chat_id], pattern) for chat_id in found if texts[chat_id]]


def refresh(r: redis.Redis, user_id: str) -> list[str]:
    """Bring the user's index up to date; return their chat ids, most recent first.

    One refresh per user at a time: the first of a person's searches may index hundreds of
    chats (seconds), and the keystrokes after it would each index them too. They wait for
    it instead (then find little left to do); past the wait, they search what is indexed."""
    try:
        seconds = REFRESH_SECONDS
        with r.lock(_refresh_lock_key(user_id), timeout=seconds, blocking_timeout=seconds):
            return _refresh(r, user_id)
    except LockError:
        log.warning("search: user %s's index is being brought up to date elsewhere", user_id)
        return r.zrevrange(user_chats_key(user_id), 0, -1)  # type: ignore[return-value]


def _refresh(r: redis.Redis, user_id: str) -> list[str]:
    chat_ids: list[str] = r.zrevrange(user_chats_key(user_id), 0, -1)  # type: ignore[assignment]
    versions = [str(version) for version in chat_versions(r, chat_ids)]
    indexed: dict[str, str] = r.hgetall(indexed_key(user_id))  # type: ignore[assignment]
    changed: dict[str, str | None] = {
        chat_id: version
        for chat_id, version in zip(chat_ids, versions, strict=True)
        if indexed.get(chat_id) != version
    }
    changed.update(dict.fromkeys(indexed.keys() - set(chat_ids)))  # deleted since: None
    batch = list(changed)
    for start in range(0, len(batch), INDEX_BATCH):
        _index_chats(r, user_id, {c: changed[c] for c in batch[start : start + INDEX_BATCH]})
    return chat_ids


def forget_user(r: redis.Redis, user_id: str) -> None:
    """Drop a user's index (their chats are deleted already)."""
    refresh(r, user_id)  # forgets every chat: each word's set empties and goes
    r.delete(indexed_key(user_id), _words_key(user_id))


def _index_chats(r: redis.Redis, user_id: str, versions: dict[str, str | None]) -> None:
    """Make the index hold each chat's words as of its version (None: the chat is gone)."""
    texts = chat_texts(r, [chat_id for chat_id, version in versions.items() if version])
    for chat_id, version in versions.items():
        now = {word for text in texts.get(chat_id, []) for word in words(text)}
        keys = [_words_key(user_id), _chat_words_key(user_id, chat_id), indexed_key(user_id)]
        args = [_word_key(user_id, ""), chat_id, version or "", *now]
        _INDEX_CHAT(keys=keys, args=args, client=r)


def _chats_with_prefix(r: redis.Redis, user_id: str, term: str) -> set[str]:
    expansions: list[str] = r.zrangebylex(  # type: ignore[assignment]
        _words_key(user_id), f"[{term}", f"[{term}\U0010ffff", start=0, num=MAX_EXPANSIONS
    )
    if not expansions:
        return set()
    return r.sunion([_word_key(user_id, word) for word in expansions])  # type: ignore[return-value]


def _found(chat_id: str, texts: list[str], pattern: re.Pattern[str]) -> Found:
    """The chat as a result: its title (`texts[0]`) and the first place one of its
    messages (the rest) holds a term."""
    title, *messages = texts
    snippet = Markup("")
    for text in messages:
        hit = pattern.search(text)
        if hit is not None:
            snippet = _marked(_around(text, hit.start()), pattern)
            break
    return Found(chat_id, _marked(title, pattern), snippet)


def _around(text: str, at: int) -> str:
    """About SNIPPET_CHARS of `text` on one line, starting a little before `at`."""
    start = max(0, at - SNIPPET_CHARS // 4)
    piece = " ".join(text[start : start + SNIPPET_CHARS].split())
    return ("…" if start else "") + piece + ("…" if start + SNIPPET_CHARS < len(text) else "")


def _marked(text: str, pattern: re.Pattern[str]) -> Markup:
    """`text` escaped, with what `pattern` finds in <mark>."""
    parts, last = [], 0
    for hit in pattern.finditer(text):
        parts += [html.escape(text[last : hit.start()]), f"<mark>{html.escape(hit[0])}</mark>"]
        last = hit.end()
    parts.append(html.escape(text[last:]))
    return Markup("".join(parts))


def _tag(user_id: str) -> str:
    return f"{PREFIX}:{{search:{user_id}}}"


def keys_pattern(user_id: str = "*") -> str:
    """A SCAN pattern for every key of a user's index (or of everyone's)."""
    return f"{_tag(user_id)}:*"


def indexed_key(user_id: str) -> str:
    """chat id -> the chat's version (its count of events) when it was last indexed."""
    return f"{_tag(user_id)}:indexed"


def _refresh_lock_key(user_id: str) -> str:
    return f"{_tag(user_id)}:refreshing"


def _words_key(user_id: str) -> str:
    return f"{_tag(user_id)}:words"


def _word_key(user_id: str, word: str) -> str:
    return f"{_tag(user_id)}:word:{word}"


def _chat_words_key(user_id: str, chat_id: str) -> str:
    return f"{_tag(user_id)}:chat:{chat_id}"
