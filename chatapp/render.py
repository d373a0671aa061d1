"""Markdown to safe HTML: answers (code highlighted, formulas as MathML) and messages.

Raw HTML in markdown is off, and every piece of output is a complete block sanitized by an
allowlist that has no `id`, `style`, event handler or htmx attribute. A running answer is
rendered a block at a time by incremental.py, with these parsers.
"""

from __future__ import annotations

from html import escape, unescape
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import unescapeAll as unescape_all
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from chatapp import formulas

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
    "div": {"class", "role", "tabindex", "aria-label"},  # a code block's header (no raw HTML)
    "pre": {"class"},
    "th": {"class"},  # align-left, align-center, align-right (see _alignment_as_class)
    "td": {"class"},
}
ALLOWED_TAGS |= formulas.MATHML_TAGS
ALLOWED_ATTRIBUTES |= formulas.MATHML_ATTRIBUTES
URL_SCHEMES = {"http", "https", "mailto"}
_FORMATTER = HtmlFormatter(nowrap=True)  # markdown-it wraps it in <pre><code>


# Built once: nh3.clean() converts the allowlists on every call, 3x the cost of the cleaning.
_CLEANER = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    attributes=ALLOWED_ATTRIBUTES,
    url_schemes=URL_SCHEMES,
    link_rel="noopener noreferrer nofollow",
)


def sanitize(html: str) -> str:
    """Return `html` with everything outside the allowlist removed."""
    return _CLEANER.clean(html)


def _highlight(code: str, language: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(language.strip() or "text")
    except ClassNotFound:
        return ""  # markdown-it escapes it as plain code
    return str(pygments_highlight(code, lexer, _FORMATTER))


def _alignment_as_class(state: Any) -> None:
    """A table column's alignment comes as a `style`, which the allowlist drops: say it
    with a class instead (app.css aligns by it)."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open"):
            style = token.attrs.pop("style", "")
            if isinstance(style, str) and style.startswith("text-align:"):
                token.attrs["class"] = "align-" + style.removeprefix("text-align:")


def _labelled_fence(
    renderer: RendererHTML, tokens: list[Token], idx: int, options: Any, env: Any
) -> str:
    """A fenced code block under a header with its language: the page copies the code
    when the header is clicked (app.js). Only the renderer makes this markup (raw HTML is
    off), so the page can trust a header it finds."""
    info = unescape_all(tokens[idx].info).strip()
    language = info.split(maxsplit=1)[0] if info else ""
    label = f'<span class="code-lang">{escape(language)}</span>' if language else ""
    named = f"Copy this {escape(language)} code" if language else "Copy this code"
    code = RendererHTML.fence(renderer, tokens, idx, options, env)
    # The header copies its block (app.js): a button for the keyboard and screen readers.
    head = f'<div class="code-head" role="button" tabindex="0" aria-label="{named}">{label}</div>'
    return f'<div class="code-block">{head}{code}</div>\n'


# An open block's render ends with one of these: the text that arrives after it goes
# inside, where it continues (a paragraph, an open code fence, a list's last item).
OPEN_BLOCK_ENDINGS = (
    "</code></pre>\n</div>\n",  # a fenced code block, under its header (_labelled_fence)
    "</code></pre>\n",
    "</p>\n",
    "</li>\n</ul>\n",
    "</li>\n</ol>\n",
)


def _parser(highlight: bool, breaks: bool = False) -> MarkdownIt:
    options: dict[str, Any] = {"html": False, "linkify": False, "typographer": False}
    options["breaks"] = breaks
    if highlight:
        options["highlight"] = _highlight
    parser = MarkdownIt("commonmark", options).enable(["table", "strikethrough"])
    parser.core.ruler.push("alignment_as_class", _alignment_as_class)
    parser.add_render_rule("fence", _labelled_fence)
    formulas.use_math(parser)
    return parser


FINAL = _parser(highlight=True)
DRAFT = _parser(highlight=False)  # the open tail: a code fence is highlighted when it closes
_MESSAGE = _parser(highlight=True, breaks=True)


def render_markdown(text: str) -> str:
    """Return the canonical, sanitized HTML of a whole markdown text."""
    return sanitize(FINAL.render(normalize(text)))


def render_message(text: str) -> str:
    """Return the sanitized HTML of a person's message: markdown as in answers, but a line
    break they typed stays a line break, as chat apps show messages."""
    return sanitize(_MESSAGE.render(normalize(text)))


def plain_text(html: str) -> str:
    """Return the text of sanitized HTML, without its markup."""
    return unescape(nh3.clean(html, tags=set()))


def normalize(text: str) -> str:
    """Apply markdown-it's own newline and NUL normalization, so line numbers agree."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
