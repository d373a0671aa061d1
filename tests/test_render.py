from __future__ import annotations

import re
from html import escape
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatapp.incremental import IncrementalRenderer
from chatapp.providers import tokenize
from chatapp.render import render_markdown, sanitize
from tests.html_safety import unsafe_parts

WORDS = st.sampled_from(
    ["alpha", "beta", "*em*", "**strong**", "`code`", "[link](http://example.com)", "x<y",
     "a & b", "~~gone~~", "<b>raw</b>", "[js](javascript:alert(1))", "é", "👍", "1.", "-", "#",
     "#include", "***", "___", "---", "===", "1)", "2.", ">", "```", "|", "+", "* x"]
)  # fmt: skip
LINE = st.lists(WORDS, min_size=1, max_size=8).map(" ".join)
PARAGRAPH = st.lists(LINE, min_size=1, max_size=3).map("\n".join)
HEADING = st.tuples(st.integers(1, 4), LINE).map(lambda t: "#" * t[0] + " " + t[1])
BULLETS = st.lists(LINE, min_size=1, max_size=4).map(lambda ls: "\n".join("- " + x for x in ls))
NUMBERED = st.lists(LINE, min_size=1, max_size=4).map(
    lambda ls: "\n".join(f"{i + 1}. {x}" for i, x in enumerate(ls))
)
CODE = st.tuples(
    st.sampled_from(["", "python", "js", "nosuchlang"]), st.lists(LINE, max_size=3)
).map(lambda t: f"```{t[0]}\n" + "\n".join(t[1]) + "\n```")
QUOTE = LINE.map(lambda x: "> " + x)
TABLE = st.tuples(LINE, LINE).map(lambda t: f"| a | b |\n|---|---|\n| {t[0]} | {t[1]} |")
FORMULA = st.sampled_from([r"\frac{a}{b}", "x^2 + y^2 = z^2", r"\sum_{i=1}^{n} i", r"\sqrt{2"])
MATH = st.one_of(
    FORMULA.map(lambda f: f"$$\n{f}\n$$"),  # a formula on its own lines
    st.tuples(LINE, FORMULA).map(lambda t: f"{t[0]} ${t[1]}$ costs $5 and $10"),
)
BLOCK = st.one_of(PARAGRAPH, HEADING, BULLETS, NUMBERED, CODE, QUOTE, TABLE, MATH, st.just("---"))
SEPARATOR = st.sampled_from(["\n\n", "\n\n\n", "\r\n\r\n", "\n"])
DOCUMENT = st.lists(st.tuples(BLOCK, SEPARATOR), min_size=1, max_size=8).map(
    lambda parts: "".join(block + sep for block, sep in parts)
)


def render_in_pieces(text: str, cuts: list[int]) -> tuple[str, list[str]]:
    """Feed `text` cut at `cuts`, flushing after each piece; return the blocks and every tail."""
    renderer = IncrementalRenderer()
    blocks, tails = [], []
    start = 0
    for cut in [*sorted(set(cuts)), len(text)]:
        renderer.feed(text[start:cut])
        start = cut
        piece = renderer.flush()
        blocks.append(piece.blocks)
        tails.append(piece.tail or "")
        tails.append(piece.more)
    blocks.append(renderer.finish().blocks)
    if renderer.whole_html is not None:  # the producer's final answer then comes from it
        assert renderer.whole_html == render_markdown(text)
    return "".join(blocks), tails


@settings(max_examples=500, deadline=None)
@given(data=st.data(), text=DOCUMENT)
def test_markdown_split_anywhere_renders_like_the_whole(data: st.DataObject, text: str) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12))
    blocks, tails = render_in_pieces(text, cuts)
    assert blocks == render_markdown(text)
    for fragment in [blocks, *tails]:
        assert sanitize(fragment) == fragment
        assert unsafe_parts(fragment) == []


def test_finished_blocks_are_sent_once_and_the_tail_stays_open() -> None:
    renderer = IncrementalRenderer()
    renderer.feed("# Title\n\nfirst para\n")
    first = renderer.flush()
    assert first.blocks == "<h1>Title</h1>\n"
    assert first.tail == "<p>first para</p>\n"
    renderer.feed("goes on\n\nsecond\n")
    second = renderer.flush()
    assert second.blocks == "<p>first para\ngoes on</p>\n"
    assert second.tail == "<p>second</p>\n"
    assert second.text == "goes on\n\nsecond\n"


def test_a_block_is_not_finished_while_the_next_one_starts_on_an_incomplete_line() -> None:
    renderer = IncrementalRenderer()
    renderer.feed("Some text\n#")  # an empty heading, until the line goes on
    assert renderer.flush().blocks == ""
    renderer.feed("include <stdio.h>\n")
    assert renderer.flush().blocks == ""
    assert renderer.finish().blocks == "<p>Some text\n#include &lt;stdio.h&gt;</p>\n"


def test_an_open_code_fence_is_highlighted_only_when_it_closes() -> None:
    renderer = IncrementalRenderer()
    renderer.feed("```python\nx = 1\n")
    assert "<span" not in (renderer.flush().tail or "")
    renderer.feed("```\n\nafter\n")
    assert '<span class="n">x</span>' in renderer.flush().blocks


def page_text(renderer: IncrementalRenderer, pieces: list[str]) -> tuple[str, int]:
    """Feed `pieces`, a flush after each, as a page applies them: return the open block as
    the page shows it at the end (last render, then the text after it) and the bytes read."""
    tail, more, read = "", "", 0
    for piece in pieces:
        renderer.feed(piece)
        flush = renderer.flush()
        read += len(flush.blocks) + len(flush.tail or "") + len(flush.more)
        if flush.tail is not None:
            tail, more = flush.tail, ""
        more += flush.more
    return tail + more, read


SHAPES = {
    "prose": ["word "] * 4000,
    "code block": ["```python\n"] + [f"x_{n} = {n}\n" for n in range(2000)],
    "table": ["| a | b |\n|---|---|\n"] + [f"| row {n} | {n * 7} |\n" for n in range(300)],
    "list": [f"- item number {n}\n" for n in range(500)],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_open_block_costs_linear_bytes_and_renders_whatever_its_shape(shape: str) -> None:
    pieces = tokenize("".join(SHAPES[shape]))  # as a model streams it
    renderer = IncrementalRenderer()
    shown, read = page_text(renderer, pieces)
    whole = "".join(pieces)
    final = render_markdown(whole)
    assert read <= len(final) + 100 * len(pieces)  # what a viewer reads (the bound)
    assert read <= 8 * len(final)  # re-renders grow geometrically, not with every token
    assert renderer.renders <= 60  # about log1.25(length): not one per token
    assert escape(pieces[-1].strip(), quote=False) in shown  # the newest text is on the page


def test_a_closing_fence_is_rendered_at_once() -> None:
    renderer = IncrementalRenderer()
    page_text(renderer, ["```\n"] + ["line of code\n"] * 400)
    renderer.feed("```\n")
    assert renderer.flush().tail is not None  # the hint: it may have closed
    renderer.feed("\nAfter it.\n")
    assert "<pre><code>line of code" in renderer.flush().blocks


def test_crlf_split_between_pieces_is_one_line_break() -> None:
    blocks, _ = render_in_pieces("a\r\n\r\nb", cuts=[2, 3])
    assert blocks == "<p>a</p>\n<p>b</p>\n"


def test_hostile_markdown_is_rendered_inert() -> None:
    html = render_markdown(
        "<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>\n\n"
        '[y](data:text/html,<script>alert(1)</script>) <a href="#" onclick="x()">a</a>'
    )
    assert unsafe_parts(html) == []
    assert "<a" not in html  # neither link survives: both have unsafe URLs


def test_a_tables_column_alignment_survives_sanitizing() -> None:
    html = render_markdown("| left | middle | right | plain |\n|:-|:-:|-:|-|\n| 1 | 2 | 3 | 4 |")
    assert '<th class="align-left">left</th>' in html
    assert '<td class="align-center">2</td>' in html and '<td class="align-right">3</td>' in html
    assert "<td>4</td>" in html and "style" not in html


def test_every_light_theme_code_colour_reads_at_wcag_aa_contrast() -> None:
    """4.5:1 against the code's background: the code block's, `--code` of the light theme
    (app.css; the code inside is transparent; the dark theme's colours, in code.css, are
    monokai's)."""
    static = Path(__file__).parent.parent / "static"
    css = (static / "app.css").read_text()
    code = (static / "code.css").read_text()
    light = code[: code.index("@media (prefers-color-scheme: dark)")]
    root = css[css.index(":root {") : css.index("}", css.index(":root {"))]
    background = re.search(r"--code: (#[0-9a-fA-F]{6})", root)
    assert background is not None
    assert re.search(r"\.message pre \{ background: var\(--code\)", css)
    assert re.search(r"\.message pre code \{ background: transparent; \}", css)
    colours = re.findall(r"(?<![-\w])color: (#[0-9a-fA-F]{3,6})", light)
    assert len(colours) > 40
    ratios = {colour: round(_contrast(colour, background[1]), 2) for colour in colours}
    assert {colour: ratio for colour, ratio in ratios.items() if ratio < 4.5} == {}


def _contrast(one: str, other: str) -> float:
    lighter, darker = sorted((_luminance(one), _luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _luminance(colour: str) -> float:
    digits = colour.lstrip("#")
    digits = "".join(c * 2 for c in digits) if len(digits) == 3 else digits
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_formulas_render_as_mathml_and_prices_stay_text() -> None:
    html = render_markdown(
        "Euler: $e^{i\\pi} + 1 = 0$, for $5 and $10.\n\n$$\n\\frac{1}{3}\n$$\n\n"
        "Not LaTeX: $\\frac{$ here. In code: `$x$`."
    )
    inline = re.search(
        r'<span class="math inline"><math display="inline">(.*?)</math></span>', html
    )
    assert inline is not None and "<mi>π</mi>" in inline.group(1)
    assert "for $5 and $10." in html
    assert '<div class="math block">\n<math display="block">' in html and "<mfrac>" in html
    assert '<span class="math inline"><code>\\frac{</code></span>' in html  # its source
    assert "<code>$x$</code>" in html
    assert render_markdown("$" + "x" * 5_001 + "$").count("<math") == 0  # too long: source


def test_hostile_formulas_are_rendered_inert() -> None:
    for latex in [
        r"\href{javascript:alert(1)}{x}",
        r"\text{<img src=x onerror=alert(1)>}",
        r"\style{background:url(x)}{x}",
        r"\mathrm{<script>alert(1)</script>}",
        r"\unicode{x3c}script\unicode{x3e}",
        "x</math><img src=x onerror=alert(1)>",
    ]:
        for text in (f"${latex}$", f"$$\n{latex}\n$$"):
            html = render_markdown(text)
            assert unsafe_parts(html) == [], (text, html)
            assert not re.search(r"<(img|script|a)\b|href|style=|onerror=", html), (text, html)
