"""The Server-Sent Events wire format.

Every event's data in chatapp is HTML (or text escaped for HTML, see frames.py). A space or
tab that starts a data line's content goes as a character reference (`&#32;`, `&#9;`):
some SSE clients strip every space at the start of a data line, not just the one the
format allows, and code in a `<pre>` would lose its indentation. A browser reads the
reference as the same character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LEADING_BLANK = re.compile(r"^[ \t]")


@dataclass(frozen=True)
class ServerSentEvent:
    """One event; `encode()` gives its exact bytes on the wire."""

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None  # milliseconds
    comment: str | None = None

    def encode(self) -> bytes:
        lines: list[str] = []
        if self.comment is not None:
            lines.extend(f": {line}" for line in _LINE_BREAK.split(self.comment))
        if self.id is not None:
            lines.append(f"id: {_one_line(self.id)}")
        if self.event is not None:
            lines.append(f"event: {_one_line(self.event)}")
        if self.retry is not None:
            lines.append(f"retry: {int(self.retry)}")
        if self.data is not None:
            lines.extend(
                f"data: {_blank_as_reference(line)}" for line in _LINE_BREAK.split(self.data)
            )
        return ("\n".join(lines) + "\n\n").encode()


def _one_line(value: str) -> str:
    # A CR or LF in `id` or `event` would start a new field: drop them (and NUL, which
    # makes browsers ignore an id).
    return _LINE_BREAK.sub("", value).replace("\0", "")


def _blank_as_reference(line: str) -> str:
    return _LEADING_BLANK.sub(lambda blank: f"&#{ord(blank[0])};", line)
