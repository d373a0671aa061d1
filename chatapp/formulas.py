"""LaTeX math in answers and messages, drawn as MathML made on the server.

`$...$` is a formula in the text and `$$...$$` one on its own lines, as ChatGPT and Open
WebUI read them. They become MathML, which browsers draw natively: no script, which the
page's CSP would not run, and nothing to load. A formula that does not convert stays as
its LaTeX source, in code. Prices are not formulas: `$5 and $10` stays text (no digit may
follow the opening `$`, and no space may follow it or precede the closing one).

MathML then passes the same sanitizer as everything else, with its presentation tags and
a few layout attributes added to the allowlist (no links, no `annotation-xml`, no styles).
"""

from __future__ import annotations

from html import escape
from typing import Any

from latex2mathml.converter import convert
from markdown_it import MarkdownIt
from mdit_py_plugins.dollarmath import dollarmath_plugin

LONGEST_FORMULA = 5_000  # characters; a longer one stays source (bounded conversion)

MATHML_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msup", "msub", "msubsup",
    "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd",
    "mstyle", "mpadded", "mphantom", "menclose", "merror", "semantics",
}  # fmt: skip
MATHML_ATTRIBUTES = {
    "math": {"display"},
    "mo": {"stretchy", "fence", "separator", "lspace", "rspace", "accent", "largeop",
           "movablelimits", "symmetric", "form", "minsize", "maxsize"},
    "mi": {"mathvariant"},
    "mn": {"mathvariant"},
    "mtext": {"mathvariant"},
    "mstyle": {"displaystyle", "scriptlevel", "mathvariant", "mathsize"},
    "mfrac": {"linethickness"},
    "mover": {"accent"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
    "mtable": {"columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines",
               "rowlines", "frame", "displaystyle"},
    "mtr": {"columnalign", "rowalign"},
    "mtd": {"columnalign", "rowalign", "columnspan", "rowspan"},
    "mspace": {"width", "height", "depth"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "menclose": {"notation"},
}  # fmt: skip


def use_math(parser: MarkdownIt) -> None:
    """Teach `parser` the dollar forms, rendered as MathML."""
    parser.use(
        dollarmath_plugin,
        allow_labels=False,
        allow_space=False,
        allow_digits=False,
        allow_blank_lines=False,
        double_inline=True,
        renderer=_mathml,
    )


def _mathml(latex: str, options: dict[str, Any]) -> str:
    display = "block" if options.get("display_mode") else "inline"
    if len(latex) <= LONGEST_FORMULA:
        try:
            return str(convert(latex, display=display))
        except Exception:
            pass
    return f"<code>{escape(latex)}</code>"
