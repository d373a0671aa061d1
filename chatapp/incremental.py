"""A growing answer's markdown as safe HTML, in CPU and bytes linear in its length.

Finished top-level blocks are rendered and sanitized once; the open last block (the tail)
is re-rendered now and then (see IncrementalRenderer), its new text escaped in between.
A block is finished when the parser has started another top-level block after it:
nothing appended later can change it (link reference definitions aside, which is why
the final answer is the canonical render of the whole text: render.render_markdown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from markdown_it.token import Token

from chatapp.render import DRAFT, FINAL, normalize, sanitize


@dataclass(frozen=True)
class Flush:
    """What one flush adds: the raw text, the newly finished blocks, and the open last block:
    either re-rendered (`tail`, which replaces the page's) or only its new text (`more`,
    escaped, which the page appends to its provisional text after the last render)."""

    text: str
    blocks: str
    tail: str | None
    more: str = ""


GROWTH = 0.5  # the open block is re-rendered when it has grown by this fraction...
MIN_GROWTH = 96  # ...and by at least this many characters (a short block: not every token;
# at 48 the offline model's answer, a few short blocks of each kind, read 9% more bytes)
FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_FENCE_LINE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
# A line that may continue the block above it: indented, a list item, a table row.
_CONTINUES = re.compile(r"[ \t]|[-*+|]|\d{1,9}[.)]")


class IncrementalRenderer:
    """Turns a growing markdown text into finished blocks (rendered once each) and an open
    last block, in CPU and bytes linear in the text whatever its shape.

    Re-rendering the open block on every flush costs the square of its length (a 300-row
    table: 71x the CPU per token of prose). So it is re-rendered only when it has grown by
    `GROWTH` (and `MIN_GROWTH` characters) since its last render, or a new line suggests it
    may have closed (a closing fence; a blank line, then a line that cannot continue it).
    In between a flush carries only the new text, escaped (`Flush.more`). Finished blocks
    are decided by the same parse either way, so blocks and the final answer are the same
    as re-rendering on every flush would give.
    """

    def __init__(self) -> None:
        self._source = ""  # normalized text
        self._tail_start = 0  # offset in `_source` of the first unfinished block
        self._unflushed = ""  # raw text since the last flush
        self._held_cr = False  # a trailing "\r" may be the first half of "\r\n"
        self._rendered = 0  # length of the open region at its last render
        self._sent = 0  # offset in `_source` up to which the page has the text
        self._checked = 0  # offset of the first line not yet looked at for hints
        self._fence = ""  # the open block's opening fence, while it is an open fence
        self._closed_fence = False  # the open block is a fence that has closed
        self._blank_seen = False  # a blank line arrived since the last render
        self._after_blank = False  # the last complete line looked at was blank
        self.renders = 0
        self.whole_html: str | None = None  # see finish()

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
        """Return what changed since the last flush; the last block stays open."""
        region = len(self._source) - self._tail_start
        grown = region >= self._rendered * (1 + GROWTH) and region >= self._rendered + MIN_GROWTH
        if grown or self._may_have_closed():
            return self._render(keep_open=True)
        more = escape(self._source[self._sent :], quote=False)
        self._sent = len(self._source)
        return self._take("", None, more)

    def finish(self) -> Flush:
        """Close the text: every block is finished, and the tail is empty. When no block
        had finished before (one table, one code block), that last render parsed the whole
        text at once: it is the canonical render too (`whole_html`)."""
        if self._held_cr:
            self._source += "\n"
            self._held_cr = False
        whole = self._tail_start == 0
        piece = self._render(keep_open=False)
        if whole:
            self.whole_html = piece.blocks
        return piece

    def _take(self, blocks: str, tail: str | None, more: str = "") -> Flush:
        text, self._unflushed = self._unflushed, ""
        return Flush(text=text, blocks=blocks, tail=tail, more=more)

    def _may_have_closed(self) -> bool:
        """Look at the complete lines that arrived since the last look (only those: linear
        overall): might the open block have ended?"""
        end = self._source.rfind("\n")
        if end < self._checked:
            return False
        lines = self._source[self._checked : end].split("\n")
        self._checked = end + 1
        if self._fence:  # an open fence ends only at a closing fence line
            return any(_closes(line, self._fence) for line in lines)
        if self._closed_fence:  # finished as soon as anything follows it
            return True
        # A blank line, then a line at column 0 that cannot continue a list or a table,
        # almost always starts a new block. A blank line alone (a loose list, indented
        # code): look once the block has grown by 1/16 since its last render.
        starts_block = False
        for line in lines:
            blank = not line.strip()
            if self._after_blank and not blank and not _CONTINUES.match(line):
                starts_block = True
            self._after_blank = blank
            self._blank_seen |= blank
        region = len(self._source) - self._tail_start
        return starts_block or (self._blank_seen and region >= self._rendered * (1 + 1 / 16))

    def _render(self, keep_open: bool) -> Flush:
        """Parse the unfinished region once: render its finished blocks for good and (if
        `keep_open`) its open block as a draft, from the same tokens."""
        self.renders += 1
        region = self._source[self._tail_start :]
        env: dict[str, object] = {}
        groups = _top_level_blocks(FINAL.parse(region, env))
        open_count = 0
        if keep_open and groups:
            # The last block stays open. So does the one before it while the last block's
            # first line is incomplete: "#" may become "#include" and join the paragraph.
            open_count = 2 if _first_line(groups[-1]) >= region.count("\n") else 1
        finished, still_open = (
            groups[: len(groups) - open_count],
            groups[len(groups) - open_count :],
        )
        blocks = "".join(sanitize(FINAL.renderer.render(g, FINAL.options, env)) for g in finished)
        if finished and keep_open:
            next_line = finished[-1][0].map[1] if finished[-1][0].map else 0
            self._tail_start += _line_offset(region, next_line)
        elif not keep_open:
            self._tail_start = len(self._source)
        tail = ""
        if keep_open:  # a code fence is highlighted only once it is finished
            draft = [token for group in still_open for token in group]
            tail = sanitize(FINAL.renderer.render(draft, DRAFT.options, env))
        self._note_open_block(self._source[self._tail_start :])
        return self._take(blocks, tail)

    def _note_open_block(self, open_text: str) -> None:
        """Remember what the open block looked like at this render, for the next flushes."""
        self._rendered = len(open_text)
        self._sent = len(self._source)
        self._checked = self._source.rfind("\n") + 1
        self._blank_seen = False
        self._after_blank = self._checked >= 2 and self._source[self._checked - 2] == "\n"
        self._fence, self._closed_fence = "", False
        match = FENCE.match(open_text)
        if match:
            lines = open_text.split("\n")[1:]
            if not open_text.endswith("\n"):
                lines = lines[:-1]  # an incomplete last line cannot close it yet
            if any(_closes(line, match.group(1)) for line in lines):
                self._closed_fence = True
            else:
                self._fence = match.group(1)


def _closes(line: str, fence: str) -> bool:
    """Whether `line` closes a code fence opened with `fence`."""
    match = _FENCE_LINE.fullmatch(line)
    return match is not None and match[1][0] == fence[0] and len(match[1]) >= len(fence)


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
