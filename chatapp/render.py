"""Markdown to safe HTML, once, by the producer.

Finished top-level blocks are rendered and sanitized once; only the open last block (the
tail) is re-rendered per flush. A block is finished when the parser has started another
top-level block after it: nothing appended later can change it (link reference definitions
aside, which is why the final answer is the canonical render of the whole text).
Raw HTML in markdown is off, and every piece of output is a complete block sanitized by an
allowlist that has no `id`, `style`, event handler or htmx attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import unescape
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li",
    "pre", "code", "span", "div", "em", "strong", "del", "s", "a",
    "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "code": {"class"},
    "span": {"class"},
    "div": {"class"},
    "pre": {"class"},
}
URL_SCHEMES = {"http", "https", "mailto"}
_FORMATTER = HtmlFormatter(nowrap=True)  # markdown-it wraps it in <pre><code>


def sanitize(html: str) -> str:
    """Return `html` with everything outside the allowlist removed."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


def _highlight(code: str, language: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(language.strip() or "text")
    except ClassNotFound:
        return ""  # markdown-it escapes it as plain code
    return pygments_highlight(code, lexer, _FORMATTER)


def _parser(highlight: bool) -> MarkdownIt:
    options: dict[str, Any] = {"html": False, "linkify": False, "typographer": False}
    if highlight:
        options["highlight"] = _highlight
    return MarkdownIt("commonmark", options).enable(["table", "strikethrough"])


_FINAL = _parser(highlight=True)
_DRAFT = _parser(highlight=False)  # the open tail: a code fence is highlighted when it closes


def render_markdown(text: str) -> str:
    """Return the canonical, sanitized HTML of a whole markdown text."""
    return sanitize(_FINAL.render(normalize(text)))


def plain_text(html: str) -> str:
    """Return the text of sanitized HTML, without its markup."""
    return unescape(nh3.clean(html, tags=set()))


def normalize(text: str) -> str:
    """Apply markdown-it's own newline and NUL normalization, so line numbers agree."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


@dataclass(frozen=True)
class Flush:
    """What one flush adds: the raw text, the newly finished blocks, the whole open tail."""

    text: str
    blocks: str
    tail: str


class IncrementalRenderer:
    """Turns a growing markdown text into finished blocks (once each) and a re-rendered tail."""

    def __init__(self) -> None:
        self._source = ""  # normalized text
        self._tail_start = 0  # offset in `_source` of the first unfinished block
        self._unflushed = ""  # raw text since the last flush
        self._held_cr = False  # a trailing "\r" may be the first half of "\r\n"

    @property
    def pending(self) -> bool:
        return bool(self._unflushed)

    def feed(self, text: str) -> None:
        """Add model output."""
        self._unflushed += text
        if self._held_cr:
            text = "\r" + text
        self._held_cr = text.endswith("\r")
        if self._held_cr:
            text = text[:-1]
        self._source += normalize(text)

    def flush(self) -> Flush:
        """Return what changed since the last flush; the tail stays open."""
        blocks = self._render_finished(keep_last_open=True)
        tail = sanitize(_DRAFT.render(self._source[self._tail_start :]))
        return self._take(blocks, tail)

    def finish(self) -> Flush:
        """Close the text: every block is finished, and the tail is empty."""
        if self._held_cr:
            self._source += "\n"
            self._held_cr = False
        return self._take(self._render_finished(keep_last_open=False), "")

    def _take(self, blocks: str, tail: str) -> Flush:
        text, self._unflushed = self._unflushed, ""
        return Flush(text=text, blocks=blocks, tail=tail)

    def _render_finished(self, keep_last_open: bool) -> str:
        region = self._source[self._tail_start :]
        env: dict[str, object] = {}
        tokens = _FINAL.parse(region, env)
        groups = _top_level_blocks(tokens)
        if keep_last_open:
            # The last block stays open. So does the one before it while the last block's
            # first line is incomplete: "#" may become "#include" and join the paragraph.
            last_starts_on_partial_line = groups and _first_line(groups[-1]) >= region.count("\n")
            groups = groups[: -2 if last_starts_on_partial_line else -1]
        if not groups:
            return ""
        html = "".join(sanitize(_FINAL.renderer.render(g, _FINAL.options, env)) for g in groups)
        if keep_last_open:
            next_line = groups[-1][0].map[1] if groups[-1][0].map else 0
            self._tail_start += _line_offset(region, next_line)
        else:
            self._tail_start = len(self._source)
        return html


def _top_level_blocks(tokens: list[Token]) -> list[list[Token]]:
    """Split a token stream into its top-level blocks."""
    groups: list[list[Token]] = []
    depth = 0
    for token in tokens:
        if depth == 0:
            groups.append([])
        groups[-1].append(token)
        depth += token.nesting
    return groups


def _first_line(group: list[Token]) -> int:
    return group[0].map[0] if group[0].map else 0


def _line_offset(text: str, line: int) -> int:
    """Return the offset in `text` where 0-based line number `line` starts."""
    offset = 0
    for _ in range(line):
        newline = text.find("\n", offset)
        if newline < 0:
            return len(text)
        offset = newline + 1
    return offset
