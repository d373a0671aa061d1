"""An answer from any OpenAI-compatible server, read from the server's raw stream.

The `openai` client makes the request (its settings, auth and typed errors), but its stream
of typed chunk objects is not used: building them cost about half of the worker's CPU per
token. The body is read as the network hands it over (network_body.py) and its `data:`
lines parsed with `orjson`. The request goes through the client's documented raw `post`:
`chat.completions.create` first walks every message of the history to type-check it
(0.4 ms of the 4 ms of CPU that starting an answer costs the worker, with one message;
more with a long chat).

How the stream ended is kept in `ending`: the chunk's `finish_reason` ("stop", "length",
"tool_calls", ...), or "cut" when the stream closed before saying it was finished: a cut
or length-limited answer is not a complete one.

Retries: only a request that did not reach the server, or that it turned away as busy
(429, 502, 503, 504), is tried again. A server that was reached and then went silent for
`MODEL_TIMEOUT_SECONDS` ends the answer; the client's own retries would triple that wait.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import weakref
from collections.abc import Iterator
from typing import Any

import openai
import orjson

from chatapp.network_body import MalformedBody, network_reads
from chatapp.streaming_model import Thinking

try:  # the HTTP client of openai 3, and its transport
    import httpcore2 as transport
    import httpx2 as http
except ImportError:  # pragma: no cover - openai 1 and 2
    import httpcore as transport  # type: ignore[no-redef]
    import httpx as http  # type: ignore[no-redef]

SILENT = (http.TimeoutException, transport.TimeoutException)
CUT = (http.RemoteProtocolError, http.ReadError, transport.ReadError, MalformedBody)

ATTEMPTS = 3
END_OF_BODY_SECONDS = 1.0  # after `[DONE]`, how long the body's end may take to come
BUSY = (429, 502, 503, 504)
LONGEST_ERROR = 300  # characters of the server's own error text shown to the user


class ModelError(Exception):
    """The model server reported an error inside its stream; `str()` is its own words."""


class ModelSilent(Exception):
    """The model server was reached, then sent nothing for the read timeout."""


class Interrupted(BaseException):
    """Thrown into a job waiting for the server's headers, when its answer is stopped.
    A BaseException: the client's `except Exception` handlers must not swallow it."""


def make_client(api_key: str, base_url: str | None, read_timeout: float) -> Any:
    """Return an `openai` client (one per process: it holds the HTTP connection pool)."""
    timeout = openai.Timeout(read_timeout, connect=10.0)  # read: the longest silence
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)


class OpenAIModel:
    """Streams one answer's chat completion."""

    def __init__(self, client: Any, model: str) -> None:
        self.name = model
        self.ending = ""  # set when the stream is over: a finish_reason, or "cut"
        self.tool_calls = False  # the model asked for a tool (chatapp runs none)
        self.whole_reads = False  # each piece is all that had arrived (network_body.py)
        self.usage: tuple[int, int] | None = None  # prompt and answer tokens, if reported
        self._client = client
        self._response: Any = None
        self._waiting: Any = None  # the greenlet waiting for the server's headers
        self._closed = False

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        try:
            self._response = self._open(messages)
        except Interrupted:
            self.ending = "stopped"
            return
        try:
            if not self._closed:
                yield from self._read(self._response)
        finally:
            self._response.close()

    def _open(self, messages: list[dict[str, str]]) -> Any:
        """Open the stream, trying again while the server could not be reached or was busy;
        return its HTTP response, its body not read yet."""
        for attempt in range(1, ATTEMPTS + 1):
            body = {"model": self.name, "messages": messages, "stream": True, **self._usage_asked()}
            self._waiting = _current_greenlet()
            try:
                return self._client.post(
                    "/chat/completions", body=body, cast_to=http.Response, stream=True
                )
            except (openai.APITimeoutError, openai.APIStatusError) as exc:
                status = getattr(exc, "status_code", None)
                if _refuses_usage_option(exc) and self._client not in _NO_USAGE_OPTION:
                    _NO_USAGE_OPTION.add(self._client)  # ask again at once, without it
                    continue
                if status not in BUSY or attempt == ATTEMPTS or self._closed:
                    raise
            except openai.APIConnectionError:
                if attempt == ATTEMPTS or self._closed:
                    raise
            finally:
                self._waiting = None
            time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _usage_asked(self) -> dict[str, Any]:
        """Ask for the token counts at the end of the stream, unless the server refused."""
        if self._client in _NO_USAGE_OPTION:
            return {}
        return {"stream_options": {"include_usage": True}}

    def _read(self, response: Any) -> Iterator[str]:
        """Yield the text of each network read at once (a busy worker reads seldom, so one
        read may hold several tokens: one piece, one flush)."""
        finish, done, rest = "", False, b""
        reads = network_reads(response, self._client.timeout.read)
        self.whole_reads = reads is not None
        try:
            for data in reads or response.iter_bytes():
                lines = (rest + data).split(b"\n")
                rest = lines.pop()  # an incomplete line waits for the next read
                text: list[str] = []
                thinking: list[str] = []
                for line in lines:
                    if done:
                        break
                    try:
                        content, thought, finish, done = self._parse(line.strip(), finish)
                    except ModelError:
                        yield "".join(text)  # what came before the error is kept
                        raise
                    text.append(content)
                    thinking.append(thought)
                if any(thinking):  # a model reasons before it answers
                    yield Thinking("".join(thinking))
                if any(text):
                    yield "".join(text)
                if done:
                    break
            if done and reads is not None:
                reads.finish(wait=END_OF_BODY_SECONDS)  # then the connection is kept
        except SILENT as exc:
            raise ModelSilent() from exc
        except CUT:
            pass  # the connection closed mid-body (a chunked stream cut short): "cut" below
        self.ending = finish or ("stop" if done else "cut")

    def _parse(self, line: bytes, finish: str) -> tuple[str, str, str, bool]:
        """Return one line's text, its reasoning, the finish reason so far, and whether it
        is `[DONE]`."""
        if not line.startswith(b"data:"):
            return "", "", finish, False  # comments, event names, blank lines
        data = line[5:].strip()
        if data == b"[DONE]":
            return "", "", finish, True
        chunk = _loads(data)
        if not isinstance(chunk, dict):
            return "", "", finish, False
        if chunk.get("error"):
            raise ModelError(_whole_characters(error_text(chunk["error"])))
        if isinstance(chunk.get("usage"), dict):  # the last chunk, when asked (no choices)
            self.usage = _token_counts(chunk["usage"])
        text = thought = ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text += _text(delta.get("content"))
            # DeepSeek and vLLM name it `reasoning_content`; Ollama, OpenRouter, gpt-oss `reasoning`
            thought += _text(delta.get("reasoning_content")) or _text(delta.get("reasoning"))
            self.tool_calls |= bool(delta.get("tool_calls"))
            finish = choice.get("finish_reason") or finish
        return _whole_characters(text), _whole_characters(thought), finish, False

    def close(self) -> None:
        """Stop the stream from another thread or greenlet (the answer was stopped)."""
        self._closed = True
        if self._response is not None:
            # Closing a socket does not wake a thread blocked reading it; shutting it down does.
            network = self._response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        elif self._waiting is not None:
            _interrupt(self._waiting, lambda: self._waiting)


# The clients of servers that refused `stream_options` (some OpenAI-compatible servers
# reject a field they do not know): their answers are asked for without it.
_NO_USAGE_OPTION: weakref.WeakSet[Any] = weakref.WeakSet()


def _refuses_usage_option(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None)
    return status in (400, 422) and "stream_options" in str(exc)


def _token_counts(usage: dict[str, Any]) -> tuple[int, int] | None:
    prompt, answer = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(answer, int) and prompt >= 0 and answer >= 0:
        return prompt, answer
    return None


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # orjson refuses a lone surrogate (`\ud83d`); json keeps it


def _text(value: object) -> str:
    """A delta field's text; anything else a server may put there (null, an object) is none."""
    return value if isinstance(value, str) else ""


def _whole_characters(text: str) -> str:
    """`text` with any lone surrogate (half an emoji, split across two chunks by a server)
    made U+FFFD: one could not be stored or sent as UTF-8."""
    if text.isascii():
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def error_text(error: object) -> str:
    """The server's own words from an error object or body, shortened; never a traceback,
    and never an address: a proxy's "upstream request to http://10.0.0.7:11434/... failed"
    names the operator's network to every user."""
    if isinstance(error, dict):
        error = error.get("message") or error.get("error") or ""
        if isinstance(error, dict):
            error = error.get("message") or ""
    text = _ADDRESS.sub("(an address)", " ".join(str(error).split()))
    return text[:LONGEST_ERROR] + ("…" if len(text) > LONGEST_ERROR else "")


# A URL, or a host with a port (an IP address, localhost, a dotted name: "10.0.0.7:11434").
_ADDRESS = re.compile(
    r"\b[a-z][a-z0-9+.-]*://\S+"
    r"|\b(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::\d+)\b"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}\b",
    re.IGNORECASE,
)


def _current_greenlet() -> Any:
    """The greenlet running this job when the process is gevent's (the answer worker)."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return None  # threads (tests, benchmarks): a stop waits for the server's headers
    import gevent

    return gevent.getcurrent()


def _interrupt(greenlet: Any, still_waiting: Any) -> None:
    """Throw `Interrupted` into `greenlet` if, when the hub gets to it, it still waits."""
    import gevent

    def throw() -> None:
        if still_waiting() is greenlet:
            greenlet.throw(Interrupted())

    gevent.get_hub().loop.run_callback(throw)
