"""An XSS corpus, as user input and as model output, through the renderer and a real browser.

Every payload goes three ways:

* through `render_markdown` and `IncrementalRenderer` (cut at every position), whose output
  must pass `tests.html_safety.unsafe_parts`;
* typed into the composer of the real page in headless Chromium (so the user message's
  server render is what the page shows);
* streamed by a fake OpenAI-compatible model in small random pieces, paced, with
  `CHATAPP_FLUSH_MS=0`, so that the producer flushes every few pieces and the cuts fall
  inside payloads: the page applies every streamed fragment (finished blocks and the
  re-rendered open tail) live, then the final render.

The page runs with a sentinel (`alert`/`confirm`/`prompt`/`print`/`open` record into
`window.__xss`, and payloads that would run call them or push to `window.__xss`), a dialog
recorder, a MutationObserver that checks every element and attribute added to the document
(so a node that lives for a moment still counts), and a structural check of the messages area
after every applied SSE event and at the end: content holds only the sanitizer's allowlist,
and hx-*/sse-* attributes appear only on the app's own wrappers (templates/partials/
answer.html, message.html and chatapp/frames.py), with the values they put there.

The browser test runs twice: with the app's CSP enforced, as users get it, and with the CSP
bypassed, so that the sanitizer alone must keep everything inert (with the CSP on, the
sentinel could stay empty only because the CSP blocked a payload).

CSP violation reports are *not* tolerated. The sanitizer removes everything the CSP would
block (inline scripts, handlers, styles, foreign images and frames); when it works, the
browser never has anything to refuse. A report would mean active markup reached the page
and only the second line of defence stopped it, which is a sanitizer hole. The only console
error allowed is a favicon 404.
"""

from __future__ import annotations

import html
import json
import random
import re
import threading
import time
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from chatapp import store
from chatapp.formulas import MATHML_TAGS
from chatapp.incremental import IncrementalRenderer
from chatapp.render import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    URL_SCHEMES,
    plain_text,
    render_markdown,
)
from harness.accounts import open_an_empty_chat, sign_up_in_browser
from harness.fake_openai import FakeModel, fake_openai_server
from harness.servers import Stack, running_stack, wait_until
from tests.html_safety import unsafe_parts

TIMEOUT_S = 30
TIMEOUT_MS = TIMEOUT_S * 1000

CORPUS: list[tuple[str, str]] = [
    # The first payload starts the first message, which becomes the chat's title.
    ("title-breakout", '</title><script>alert("title")</script>'),
    # script tags
    ("script", "<script>alert(1)</script>"),
    ("script-marker", '<script>window.__xss.push("script-marker")</script>'),
    ("script-mixed-case", "<ScRiPt>alert(1)</sCrIpT>"),
    ("script-same-origin-src", '<script src="/static/app.js"></script>'),  # the CSP allows it
    ("script-nested", "<scr<script>ipt>alert(1)</scr</script>ipt>"),
    ("script-unclosed", "<script>alert(1)//"),
    ("textarea-breakout", "</textarea><script>alert(1)</script>"),
    # img / svg / body and other event handlers
    ("img-onerror", "<img src=x onerror=alert(1)>"),
    ("img-onerror-mixed-case", "<IMG SRC=x OnErRoR=alert(1)>"),
    ("img-slash-separator", '<img/src="x"/onerror="window.__xss.push(`img`)">'),
    ("svg-onload", "<svg onload=alert(1)>"),
    ("svg-script", "<svg><script>alert(1)</script></svg>"),
    ("svg-animate", "<svg><animate onbegin=alert(1) attributeName=x dur=1s>"),
    ("body-onload", "<body onload=alert(1)>"),
    ("details-ontoggle", "<details open ontoggle=alert(1)>"),
    ("input-autofocus", "<input autofocus onfocus=alert(1)>"),
    ("video-source", "<video><source onerror=alert(1)></video>"),
    ("mxss-math-style", "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>"),
    ("mxss-noscript", '<noscript><p title="</noscript><img src=x onerror=alert(1)>">'),
    ("raw-anchor", '<a href="javascript:alert(1)">raw</a> <a href="#" onclick="alert(1)">x</a>'),
    # javascript: / data: / vbscript: URLs in markdown links, images and autolinks
    ("md-link-js", "[click](javascript:alert(1))"),
    ("md-link-js-mixed-case", "[click](JaVaScRiPt:alert(1))"),
    ("md-link-js-angle", "[click](<javascript:alert(1)>)"),
    ("md-link-js-entity-colon", "[click](javascript&#58;alert(1))"),
    ("md-link-js-entity-letter", "[click](&#106;avascript:alert(1))"),
    ("md-link-js-entity-tab", "[click](jav&#x09;ascript:alert(1))"),
    ("md-link-js-percent-newline", "[click](java%0ascript:alert(1))"),
    ("md-link-data-html", "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)"),
    ("md-link-data-image", "[click](data:image/png;base64,iVBORw0KGgo=)"),  # markdown-it allows
    ("md-link-vbscript", "[click](vbscript:msgbox(1))"),
    ("md-link-other-schemes", "[a](feed:javascript:alert(1)) [b](blob:https://x.example/1)"),
    ("md-image-js", "![img](javascript:alert(1))"),
    ("md-image-data", "![img](data:image/png;base64,iVBORw0KGgo=)"),  # markdown-it allows
    ("md-image-attr-breakout", '![img](x" onerror="alert(1))'),
    ("md-link-title-breakout", '[click](https://example.com "t\\" onmouseover=\\"alert(1)")'),
    ("md-link-href-breakout", '[click](https://example.com"onmouseover="alert(1))'),
    ("md-link-text-img", "[<img src=x onerror=alert(1)>](https://example.com)"),
    ("md-nested-image-link", "[![x](javascript:alert(1))](javascript:alert(2))"),
    ("md-reference-js", "[ref][r] and [r]\n\n[r]: javascript:alert(1)"),
    ("autolink-js", "<javascript:alert(1)>"),
    ("autolink-vbscript", "<vbscript:msgbox(1)>"),
    ("autolink-data", "<data:text/html,alert(1)>"),
    # entity-encoded variants
    ("entity-script", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("entity-decimal-img", "&#60;img src=x onerror=alert(1)&#62;"),
    ("entity-raw-href", '<a href="jav&#x61;script:alert(1)">x</a>'),
    # attribute breakouts
    ("attr-double-quote", '" onmouseover="alert(1)" x="'),
    ("attr-single-quote", "' onfocus='alert(1)' autofocus='"),
    ("attr-backtick", "`onmouseover=alert(1)`"),
    ("fence-info-breakout", '```js" onmouseover="alert(1)\nconsole.log(1)\n```'),
    ("fence-info-html", "```<img src=x onerror=alert(1)>\nx\n```"),
    # style / expression / CSS injection
    ("style-attr-js-url", '<div style="background:url(javascript:alert(1))">x</div>'),
    ("style-expression", '<p style="width:expression(alert(1))">x</p>'),
    ("style-element", "<style>@import 'https://evil.example/x.css';*{display:none}</style>"),
    ("link-stylesheet", '<link rel="stylesheet" href="https://evil.example/x.css">'),
    ("css-in-code-class", "```python;}*{display:none\nx\n```"),
    ("style-overlay", '<span style="position:fixed;inset:0;z-index:9">overlay</span>'),
    ("md-attribute-list", '[x](https://example.com){: onclick="alert(1)" style="color:red"}'),
    # iframe / object / embed
    ("iframe-js", '<iframe src="javascript:alert(1)"></iframe>'),
    ("iframe-srcdoc", '<iframe srcdoc="<script>parent.alert(1)</script>"></iframe>'),
    ("object-data", '<object data="javascript:alert(1)"></object>'),
    ("embed-data", '<embed src="data:text/html,<script>alert(1)</script>">'),
    ("frameset", "<frameset onload=alert(1)>"),
    # htmx attribute injection
    ("hx-get-load", '<div hx-get="/" hx-trigger="load" hx-target="body">x</div>'),
    ("hx-on", '<button hx-on:click="alert(1)" hx-on::load="alert(1)">x</button>'),
    ("data-hx", '<span data-hx-get="/" data-hx-trigger="load">x</span>'),
    ("sse-connect", '<div hx-ext="sse" sse-connect="/" sse-swap="message">x</div>'),
    ("hx-swap-oob-composer", '<div id="composer" hx-swap-oob="true">pwned</div>'),
    ("hx-swap-oob-messages", '<div hx-swap-oob="beforeend:#messages"><img src=x onerror=alert(1)>'),
    ("hx-vals-js", '<div hx-post="/chats" hx-vals=\'js:{a:alert(1)}\' hx-trigger="load">x</div>'),
    ("hx-disable-escape", '</div></div><div hx-get="/" hx-trigger="load">escaped</div>'),
    # template and markdown tricks: code spans and fences that try to close early
    ("code-span-close", "`</code><script>alert(1)</script>`"),
    ("double-code-span", "`` </code></pre><img src=x onerror=alert(1)> ``"),
    ("fence-close-early", "```\n</code></pre><img src=x onerror=alert(1)>\n```"),
    ("fence-highlighted", "```python\n</code></pre><script>alert(1)</script>\n```"),
    ("tilde-fence", "~~~html\n<script>alert(1)</script>\n~~~"),
    ("indented-code", "    </code></pre><script>alert(1)</script>"),
    ("html-comment", "<!-- --><script>alert(1)</script><!--<img src=x onerror=alert(1)>-->"),
    ("cdata", "<![CDATA[<script>alert(1)</script>]]>"),
    (
        "table-cells",
        "| <img src=x onerror=alert(1)> | [x](javascript:alert(1)) |\n|---|---|\n"
        "| <svg onload=alert(1)> | `</td><script>alert(1)</script>` |",
    ),
    ("blockquote-list", "> - <script>alert(1)</script>\n> - [x](javascript:alert(1))"),
    ("heading", "# <img src=x onerror=alert(1)> [x](javascript:alert(1))"),
    ("jinja", "{{ 7*7 }} {{ config }} {% raw %}x{% endraw %}"),
    (
        "sse-framing",
        "x\n\nevent: end\ndata: <img src=x onerror=alert(1)>\nid: 1\n\n"
        "data: <script>alert(1)</script>",
    ),
    # unicode and null-byte tricks
    ("null-in-tag", "<scr\0ipt>alert(1)</scr\0ipt> <img src=x one\0rror=alert(1)>"),
    ("null-in-scheme", "[click](java\0script:alert(1))"),
    ("zero-width-scheme", "[click](\u200bjavascript:alert(1))"),
    ("control-char-entity", "[click](&#x01;javascript:alert(1))"),
    ("fullwidth-brackets", "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e"),
    ("line-separators", "<img src=x\u2028onerror=alert(1)> \u2029 \u202e<script>alert(1)</script>"),
    ("bom-nbsp", "\ufeff<img\u00a0src=x onerror=alert(1)>"),
    # LaTeX formulas, drawn as MathML (formulas.py)
    ("math-href", r"$\href{javascript:alert(1)}{x}$ and $$\href{javascript:alert(1)}{y}$$"),
    ("math-text-tag", r"$\text{</math><img src=x onerror=alert(1)>}$"),
    ("math-block-break", "$$\nx</math><script>alert(1)</script>\n$$"),
    ("math-style", r"$\style{background:url(javascript:alert(1))}{x}$"),
    # meta refresh, base href, form action
    ("meta-refresh", '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">'),
    ("base-href", '<base href="javascript:alert(1)//"><base href="https://evil.example/">'),
    ("form-action", '<form action="javascript:alert(1)"><button>x</button></form>'),
    ("formaction", '<button formaction="javascript:alert(1)">x</button>'),
    ("isindex", "<isindex action=javascript:alert(1) type=image>"),
    # Last: an unclosed fence swallows whatever follows it.
    ("fence-unclosed", "```\n</code></pre><script>alert(1)</script>"),
]
SEPARATOR = "\n\n"
MODEL_TEXT = SEPARATOR.join(payload for _, payload in CORPUS)  # what the fake model streams
PER_MESSAGE = 12
MESSAGES = [
    SEPARATOR.join(payload for _, payload in CORPUS[start : start + PER_MESSAGE])
    for start in range(0, len(CORPUS), PER_MESSAGE)
]


def payload_spans() -> dict[str, tuple[int, int]]:
    """Return where each payload sits in MODEL_TEXT, as (start, end) offsets."""
    spans, offset = {}, 0
    for name, payload in CORPUS:
        spans[name] = (offset, offset + len(payload))
        offset += len(payload) + len(SEPARATOR)
    return spans


def model_pieces(text: str, seed: int) -> list[str]:
    """Cut `text` into pieces of 1 to 16 characters, differently for every seed."""
    rng = random.Random(seed)
    pieces, start = [], 0
    while start < len(text):
        end = start + rng.randint(1, 16)
        pieces.append(text[start:end])
        start = end
    return pieces


# -- what a browser would do with an href -----------------------------------------------


# -- the renderer, without a browser ----------------------------------------------------

CONTEXTS = ["{}", "> {}", "1. {}", "intro\n\n{}\n\noutro"]


@pytest.mark.parametrize(("name", "payload"), CORPUS, ids=[name for name, _ in CORPUS])
def test_payload_renders_inert_whole_and_cut_at_every_position(name: str, payload: str) -> None:
    for context in CONTEXTS:
        assert unsafe_parts(render_markdown(context.format(payload))) == [], context
    text = f"intro\n\n{payload}\n\noutro"
    for cut in range(len(text) + 1):
        renderer = IncrementalRenderer()
        renderer.feed(text[:cut])
        first = renderer.flush()
        renderer.feed(text[cut:])
        second = renderer.flush()
        last = renderer.finish()
        for flush in (first, second, last):
            for fragment in (flush.blocks, flush.tail or "", flush.more):
                assert unsafe_parts(fragment) == [], (cut, fragment)


def test_corpus_streamed_in_model_pieces_renders_inert() -> None:
    """The whole corpus as the fake model streams it: every flush's blocks and tail."""
    assert unsafe_parts(render_markdown(MODEL_TEXT)) == []
    for seed in range(3):
        renderer = IncrementalRenderer()
        for piece in model_pieces(MODEL_TEXT, seed):
            renderer.feed(piece)
            flush = renderer.flush()
            for fragment in (flush.blocks, flush.tail or "", flush.more):
                assert unsafe_parts(fragment) == [], flush
        assert unsafe_parts(renderer.finish().blocks) == []


def test_the_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 40
    assert len({name for name, _ in CORPUS}) == len(CORPUS)


# -- the real stack, with a fake model that streams the corpus ---------------------------


class GatedCorpus(list[str]):
    """`FakeModel.pieces` that the fake server iterates once per answer: it waits for `gate`
    (the page is following the answer), then yields the corpus in small pieces, paced so
    that the producer flushes every few pieces."""

    PACE_S = 0.001

    def __init__(self, text: str) -> None:
        super().__init__([text])
        self.text = text
        self.gate = threading.Event()
        self.answers = 0

    def __iter__(self) -> Iterator[str]:
        seed, self.answers = self.answers, self.answers + 1
        self.gate.wait(TIMEOUT_S)  # a page that never followed fails on its missing deltas
        for piece in model_pieces(self.text, seed):
            time.sleep(self.PACE_S)
            yield piece


@pytest.fixture(scope="module")
def corpus_model() -> GatedCorpus:
    return GatedCorpus(MODEL_TEXT)


@pytest.fixture(scope="module")
def xss_stack(
    tmp_path_factory: pytest.TempPathFactory, corpus_model: GatedCorpus
) -> Iterator[Stack]:
    # The model reasons in the corpus too (once the page follows, like its answer): its
    # "Thinking" is shown as text, never as markup.
    thinking = GatedCorpus(MODEL_TEXT)
    thinking.gate = corpus_model.gate
    with fake_openai_server(FakeModel(corpus_model, thinking=thinking)) as base_url:
        settings = {
            "OPENAI_API_KEY": "test",
            "OPENAI_BASE_URL": base_url,
            "CHATAPP_FLUSH_MS": "0",  # flush as often as the tail's rate limit allows
        }
        with running_stack(tmp_path_factory.mktemp("xss"), **settings) as stack:
            try:
                yield stack
            finally:
                corpus_model.gate.set()  # release a model still waiting


# Runs in every frame before the page's scripts (outside its CSP). In a frame it records the
# frame itself: no frame may exist. In the top document it installs the checks.
SENTINEL = r"""
(() => {
  const record = (what) => {
    try {
      window.top.__xss.push(what);
    } catch (e) {
      (window.__xss = window.__xss || []).push(what);
    }
  };
  if (window === window.top) {
    window.__xss = [];
  } else {
    record("a frame loaded " + location.href);
  }
  for (const name of ["alert", "confirm", "prompt", "print", "open"]) {
    window[name] = function () {
      record(name + "(" + Array.from(arguments).map(String).join(", ") + ") in " + location.href);
    };
  }
  if (window !== window.top) return;

  window.__csp = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__csp.push(e.violatedDirective + " blocked " + e.blockedURI + ": " + e.sample);
  });

  const ALLOWED_TAGS = new Set(__ALLOWED_TAGS__);
  const MATHML_TAGS = new Set(__MATHML_TAGS__);  // formulas: in MathML's namespace, not HTML's
  const inItsNamespace = (el) => el.namespaceURI === (MATHML_TAGS.has(el.localName)
    ? "http://www.w3.org/1998/Math/MathML" : "http://www.w3.org/1999/xhtml");
  const ALLOWED_ATTRIBUTES = __ALLOWED_ATTRIBUTES__;
  const URL_PROTOCOLS = new Set(__URL_PROTOCOLS__);
  // Never acceptable once the page has loaded, wherever they are.
  const FORBIDDEN_TAGS = new Set(["script", "iframe", "frame", "frameset", "object", "embed",
    "applet", "img", "image", "picture", "svg", "style", "link", "meta", "base",
    "template", "noscript", "video", "audio", "source", "track", "canvas", "marquee",
    "details", "dialog", "portal", "isindex", "select"]);
  // (MathML's <math> is allowed content: formulas. Its tags are in ALLOWED_TAGS.)
  const URL_ATTRIBUTES = ["href", "src", "action", "formaction", "data", "poster",
    "background", "xlink:href", "srcset", "cite", "ping", "codebase"];
  const BAD_SCHEME = /^(javascript|data|vbscript):/;
  const HTMX_ATTRIBUTE = /^(data-)?(hx-|sse-)/;
  // The app's own markup in #messages (templates/partials/message.html, answer.html,
  // answer_gone.html, chatapp/frames.py): each element, and the attributes it may carry.
  const USER_ACTIONS = "#messages > article.message.user > footer.message-actions";
  const ANSWER_ACTIONS = "#messages > article.answer > header.answer-meta > span.answer-actions";
  const SKELETON = [
    ["#messages > article.message.user", ["class", "id", "aria-label"]],
    ["#messages > article.message.user > div.message-body", ["class", "hx-disable"]],
    ["#messages > article.message.user > footer.message-actions", ["class"]],
    [`${USER_ACTIONS} > nav.versions`, ["class", "aria-label"]],
    [`${USER_ACTIONS} > nav.versions > button`,
      ["type", "aria-label", "hx-swap", "hx-post", "disabled"]],
    [`${USER_ACTIONS} > nav.versions > span`, []],
    [`${USER_ACTIONS} > details.edit`, ["class"]],
    [`${USER_ACTIONS} > details.edit > summary`, []],
    [`${USER_ACTIONS} > details.edit > form`, ["hx-post", "hx-swap", "hx-disabled-elt"]],
    [`${USER_ACTIONS} > details.edit > form > input`, ["type", "name", "value"]],
    [`${USER_ACTIONS} > details.edit > form > textarea`,
      ["name", "rows", "required", "aria-label"]],
    [`${USER_ACTIONS} > details.edit > form > button`, ["type"]],
    ["#messages > article.message.answer", ["class", "id", "data-status", "aria-label",
      "aria-busy", "data-generation"]],
    ["#messages > article.answer > header.answer-meta", ["class"]],
    ["#messages > article.answer > header.answer-meta > span.model", ["class"]],
    ["#messages > article.answer > header.answer-meta > span.state", ["class"]],
    ["#messages > article.answer > header.answer-meta > span.usage", ["class", "title"]],
    ["#messages > article.answer > header.answer-meta > button.stop",
      ["type", "class", "hx-post", "hx-swap"]],
    ["#messages > article.answer > header.answer-meta > span.answer-actions", ["class"]],
    [`${ANSWER_ACTIONS} > nav.versions`, ["class", "aria-label"]],
    [`${ANSWER_ACTIONS} > nav.versions > button`,
      ["type", "aria-label", "hx-swap", "hx-post", "disabled"]],
    [`${ANSWER_ACTIONS} > nav.versions > span`, []],
    ["#messages > article.answer > header.answer-meta > span.answer-actions > button.copy",
      ["type", "class", "data-copy", "aria-label"]],
    ["#messages > article.answer > header.answer-meta > span.answer-actions > button.regenerate",
      ["type", "class", "hx-post", "hx-swap"]],
    ["#messages > article.answer > div.answer-body", ["class"]],
    ["#messages > article.answer > div.answer-body > details.thinking", ["class", "open"]],
    ["#messages > article.answer > div.answer-body > details.thinking > summary", []],
    ["#messages > article.answer > div.answer-body > details.thinking > div.thinking-text",
      ["class", "id", "hx-disable"]],
    ["#messages > article.answer > div.answer-body > div.blocks", ["class", "id", "hx-disable"]],
    ["#messages > article.answer > div.answer-body > div.tail",
      ["class", "id", "hx-disable", "hx-swap-oob"]],
    ["#messages > article.answer > p.answer-error", ["class", "role"]],
  ];
  // Where sanitized HTML goes: everything inside these is content.
  const CONTAINERS = SKELETON.map((rule) => rule[0])
    .filter((s) => /div\.(message-body|blocks|tail)$/.test(s)).join(", ");
  const ID = "[0-9a-f]{16}";
  const APP_VALUES = {
    "hx-ext": /^sse$/,
    "data-generation": new RegExp(`^${ID}$`),
    "hx-post": new RegExp(`^/chats/[0-9a-f]+/messages/${ID}/(stop|regenerate|edit|show)$`),
    "hx-disabled-elt": /^find button$/,
    "data-copy": new RegExp(`^#answer-${ID} \\.blocks( pre)?$`),
    "hx-swap": /^(none|innerHTML|beforeend|outerHTML)$/,
    "hx-disable": /^$/,
    "hx-swap-oob": /^true$/,
  };
  // Elements that carry hx-*/sse-* attributes by design, anywhere in the document.
  const APP_HTMX_ELEMENTS = "body, section.chat, section.chat > div[hidden], form#composer, " +
    "section.welcome, section.welcome > div[hidden], ul#chat-list, " +
    "button.stop, button.regenerate, div.blocks, div.tail, div.message-body, div.thinking-text, " +
    "form.rename, form.options, form[hx-confirm], nav.versions > button, details.edit > form, " +
    "nav.sidebar > form.search, nav.sidebar > form.search > input, " +
    "nav.sidebar > form.search > span[hidden]";

  const describe = (el) => {
    const attrs = Array.from(el.attributes).map((a) => ` ${a.name}="${a.value}"`).join("");
    return `<${el.localName}${attrs}>`;
  };
  // As the URL parser reads a scheme: without outer C0 controls and spaces, tabs, newlines.
  const urlScheme = (value) => value.replace(/^[\u0000-\u0020]+|[\u0000-\u0020]+$/g, "")
    .replace(/[\t\n\r]/g, "").toLowerCase();

  // Rules for any element anywhere: no handlers, no styles, no script-bearing URLs.
  function hardProblems(el, attributeNames) {
    const found = [];
    // The app's own <details> (the chat's options menu, templates/chat.html, and a
    // question's Edit) and the model picker in the menu are no content.
    const options = "section.chat > header.chat-header > details.chat-actions";
    const appOwn = el.matches(`${options}, ${options} > form.options > select#chat-model, ` +
      "#messages > article.answer > div.answer-body > details.thinking, " +
      `${USER_ACTIONS} > details.edit`);
    if (FORBIDDEN_TAGS.has(el.localName) && !appOwn)
      found.push(`forbidden tag ${describe(el)}`);
    for (const name of attributeNames || el.getAttributeNames()) {
      const value = el.getAttribute(name);
      if (value === null) continue;
      const lower = name.toLowerCase();
      if (lower.startsWith("on")) found.push(`handler ${lower} on ${describe(el)}`);
      if (["style", "srcdoc", "formaction"].includes(lower))
        found.push(`${lower} on ${describe(el)}`);
      if (URL_ATTRIBUTES.includes(lower) && BAD_SCHEME.test(urlScheme(value)))
        found.push(`${lower} URL on ${describe(el)}`);
      if (HTMX_ATTRIBUTE.test(lower)) {
        const parent = el.parentElement;
        const content = parent && parent.closest(".blocks, .tail, .message-body");
        if (content || !el.matches(APP_HTMX_ELEMENTS))
          found.push(`htmx attribute ${lower} on ${describe(el)}`);
      }
    }
    return found;
  }

  // htmx marks swapped elements with its own classes for a moment.
  const ownClasses = (el) => Array.from(el.classList).filter((c) => !c.startsWith("htmx-"));

  function contentProblems(el) {
    const found = hardProblems(el);
    if (!inItsNamespace(el) || !ALLOWED_TAGS.has(el.localName))
      found.push(`tag outside the allowlist ${describe(el)}`);
    const allowed = new Set(ALLOWED_ATTRIBUTES[el.localName] || []);
    if (el.localName === "a") allowed.add("rel");
    for (const name of el.getAttributeNames()) {
      if (allowed.has(name)) continue;
      if (name === "class" && ownClasses(el).length === 0) continue;
      found.push(`attribute ${name} outside the allowlist on ${describe(el)}`);
    }
    if (el.localName === "a" && el.hasAttribute("href")) {
      let protocol = "unparsable:";  // a browser cannot follow such a link at all
      try { protocol = new URL(el.getAttribute("href"), document.baseURI).protocol; } catch (e) {}
      if (!URL_PROTOCOLS.has(protocol) && protocol !== "unparsable:")
        found.push(`link to ${protocol} ${describe(el)}`);
    }
    return found;
  }

  function skeletonProblems(el) {
    const found = hardProblems(el);
    const rule = SKELETON.find((r) => el.matches(r[0]));
    if (!rule) return found.concat([`not the app's markup: ${describe(el)}`]);
    for (const name of el.getAttributeNames()) {
      if (!rule[1].includes(name)) found.push(`attribute ${name} on the app's ${describe(el)}`);
      else if (APP_VALUES[name] && !APP_VALUES[name].test(el.getAttribute(name)))
        found.push(`unexpected ${name} value on the app's ${describe(el)}`);
    }
    return found;
  }

  // Everything in (part of) #messages: the app's wrappers, and the content inside them.
  window.__scanMessages = (root) => {
    root = root || document.getElementById("messages");
    if (!root) return [];
    const found = [];
    const elements = root.id === "messages" ? [] : [root];
    for (const el of elements.concat(Array.from(root.querySelectorAll("*")))) {
      if (pendingSpan(el)) continue;
      const inContent = el.parentElement && el.parentElement.closest(CONTAINERS);
      found.push(...(inContent ? contentProblems(el) : skeletonProblems(el)));
    }
    return found;
  };

  // The app's own span for the open block's text since its last render: the one with its
  // answer's id (the sanitizer lets no id through, so content cannot fake it); text only.
  function pendingSpan(el) {
    const article = el.closest("article.answer");
    return el.localName === "span" && article !== null && el.className === "pending"
      && el.id === "pending-" + article.id.replace(/^answer-/, "")
      && el.getAttributeNames().every((name) => name === "id" || name === "class")
      && el.children.length === 0;
  }

  // The whole document: nothing injected outside #messages either.
  window.__scanDocument = () => {
    const found = [];
    for (const el of document.querySelectorAll("*")) {
      const name = el.localName;
      const inHead = el.parentElement === document.head;
      if (name === "script") {
        const src = el.getAttribute("src") || "";
        if (!(inHead && /^\/static\/[\w.-]+\.js\?v=[0-9a-f]{12}$/.test(src)))
          found.push(`script ${describe(el)}`);
        continue;
      }
      if (name === "meta") {
        if (!inHead || el.hasAttribute("http-equiv")) found.push(`meta ${describe(el)}`);
        continue;
      }
      if (name === "link") {
        if (!inHead || !/^\/static\//.test(el.getAttribute("href") || ""))
          found.push(`link ${describe(el)}`);
        continue;
      }
      found.push(...hardProblems(el));
      // The composer, the "new chat" forms (base.html, index.html), "log out" and the
      // search box (base.html), and a question's Edit (message.html, in the skeleton).
      const action = el.getAttribute("action");
      const edit = el.matches(`${USER_ACTIONS} > details.edit > form`);
      const ours = (el.method === "post" && (action === "/chats" || action === "/logout")
        && el.closest("header.topbar, section.welcome"))
        || (el.parentElement && el.parentElement.matches("section.chat details.chat-actions"))
        || (el.method === "get" && action === "/search" && el.matches("nav.sidebar > form"));
      if (name === "form" && !edit && (el.closest("#messages") || !(el.id === "composer" || ours)))
        found.push(`form ${describe(el)}`);
    }
    // base.html's four: htmx, its SSE extension, chat-stream.js, app.js.
    if (document.querySelectorAll("script").length !== 4) found.push("script count changed");
    if (document.querySelectorAll("title").length !== 1) found.push("title count changed");
    if (document.baseURI !== location.href) found.push(`base URI is ${document.baseURI}`);
    if (window.frames.length) found.push(`${window.frames.length} frames`);
    return found;
  };

  // Every element and attribute added after the page loaded, even if it is gone by now.
  window.__mutationProblems = [];
  window.__mutatedElements = 0;
  const observer = new MutationObserver((records) => {
    for (const record of records) {
      if (record.type === "attributes") {
        window.__mutationProblems.push(...hardProblems(record.target, [record.attributeName]));
        continue;
      }
      for (const node of record.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        for (const el of [node, ...node.querySelectorAll("*")]) {
          window.__mutatedElements += 1;
          window.__mutationProblems.push(...hardProblems(el));
        }
      }
    }
  });
  document.addEventListener("DOMContentLoaded", () => {
    observer.observe(document, { childList: true, subtree: true, attributes: true });
  });

  // Each applied SSE event: record it, and check its answer (the whole messages area at
  // `end`) right after the swap, mid-stream. Listening on window runs after app.js.
  window.__sse = [];
  window.__midStreamProblems = [];
  window.__midStreamScans = 0;
  window.__blocksBeforeEnd = {};
  // The chat stream's events name their answer at the start (frames.py): a delta targets
  // its blocks, its pending text, its reasoning or its open block; a new or replaced
  // answer is its article. A user message names none. A delta in the short form (the
  // text alone) names the answer's generation in its id, which the running article has.
  const ANSWER_OF = new RegExp(
    `^<div hx-swap-oob="beforeend:#(?:blocks|pending|thinking)-(${ID})">|` +
    `^<div class="tail" id="tail-(${ID})"|` +
    `^(?:<div hx-swap-oob="beforeend:#messages">)?\\s*` +
    `<article class="message answer" id="answer-(${ID})"`);
  const GENERATION = /^c\d+\.([0-9a-f]{16}):\d+$/;
  const answerOf = (native) => {
    const match = ANSWER_OF.exec(native.data || "");
    if (match) return "answer-" + (match[1] || match[2] || match[3]);
    const generation = native.type === "delta" && GENERATION.exec(native.lastEventId || "");
    const running = generation &&
      document.querySelector(`article.answer[data-generation="${generation[1]}"]`);
    return running ? running.id : "";
  };
  window.addEventListener("htmx:sseBeforeMessage", (event) => {
    const native = event.detail;
    const answer = answerOf(native);
    // Refused events (the chat-stream extension decides after every listener) are never
    // applied: `dropped` stays true until htmx:sseMessage says this one was.
    window.__sse.push({answer: answer, type: native.type, id: native.lastEventId,
      dropped: true});
    if (native.type !== "end") return;
    const blocks = document.getElementById(answer).querySelector(".blocks").cloneNode(true);
    blocks.querySelectorAll(".htmx-added").forEach((el) => {
      el.classList.remove("htmx-added");
      if (!el.classList.length) el.removeAttribute("class");
    });
    window.__blocksBeforeEnd[answer] = blocks.innerHTML;
  });
  window.addEventListener("htmx:sseMessage", (event) => {
    const applied = window.__sse[window.__sse.length - 1];
    if (applied && applied.id === event.detail.lastEventId) applied.dropped = false;
    const answer = answerOf(event.detail);
    const root = event.detail.type === "end" || !answer ? null : document.getElementById(answer);
    window.__midStreamProblems.push(...window.__scanMessages(root));
    window.__midStreamScans += 1;
  });
})();
"""


def sentinel_script() -> str:
    allowed = {tag: sorted(names) for tag, names in ALLOWED_ATTRIBUTES.items()}
    return (
        SENTINEL.replace("__ALLOWED_TAGS__", json.dumps(sorted(ALLOWED_TAGS)))
        .replace("__MATHML_TAGS__", json.dumps(sorted(MATHML_TAGS)))
        .replace("__ALLOWED_ATTRIBUTES__", json.dumps(allowed))
        .replace("__URL_PROTOCOLS__", json.dumps(sorted(f"{s}:" for s in URL_SCHEMES)))
    )


# Every request the page may make; an injected hx-get, stylesheet or image would add one.
EXPECTED_REQUESTS = re.compile(
    r"GET /"
    r"|(GET|POST) /signup"  # the test's own sign-up, before the corpus
    r"|POST /chats"
    r"|GET /chats/[0-9a-f]+"
    r"|POST /chats/[0-9a-f]+/messages"
    r"|GET /chats/[0-9a-f]+/live"
    r"|GET /live"
    r"|GET /static/[\w.-]+"
    r"|GET /favicon\.ico"
)


class Watch:
    """Everything a page may do that it should not: dialogs, errors, popups, requests."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.dialogs: list[str] = []
        self.errors: list[tuple[str, str]] = []
        self.requests: list[str] = []
        self.popups: list[str] = []
        page.set_default_timeout(TIMEOUT_MS)
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append((f"pageerror: {error}", "")))
        page.on("request", self._request)
        page.on("popup", lambda popup: self.popups.append(popup.url))
        page.add_init_script(sentinel_script())

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append((message.text, message.location.get("url", "")))

    def _request(self, request: Any) -> None:
        url = request.url
        path = url.removeprefix(self.base) if url.startswith(self.base + "/") else url
        hx = request.headers.get("hx-request") == "true"
        described = f"{request.method} {path.split('?')[0]}"
        if not EXPECTED_REQUESTS.fullmatch(described) or (
            hx and not described.endswith("/messages")
        ):
            self.requests.append(f"{described} (htmx: {hx})")
        elif described == "GET /" and not request.is_navigation_request():
            self.requests.append(f"{described} (not a navigation)")

    def unexpected_errors(self) -> list[tuple[str, str]]:
        return [
            (text, url)
            for text, url in self.errors
            if not (url.endswith("/favicon.ico") and "404" in text)
        ]

    def assert_nothing_ran(self) -> None:
        """The current document ran no payload and holds nothing injected; nothing else
        happened that a payload could cause."""
        page = self.page
        assert page.evaluate("window.__xss") == []
        assert page.evaluate("window.__csp") == []
        assert page.evaluate("window.__mutationProblems") == []
        assert page.evaluate("window.__midStreamProblems") == []
        assert page.evaluate("window.__scanMessages()") == []
        assert page.evaluate("window.__scanDocument()") == []
        assert len(page.frames) == 1
        assert self.dialogs == []
        assert self.popups == []
        assert self.requests == []
        assert self.unexpected_errors() == []

    def as_browser_html(self, html: str) -> str:
        """Return `html` as this browser serializes it, to compare it with `innerHTML`."""
        serialized: str = self.page.evaluate(
            "html => { const t = document.createElement('template'); t.innerHTML = html;"
            " return t.innerHTML; }",
            html,
        )
        return serialized


def check_stored_answer(stack: Stack, chat_id: str, answer_id: str) -> tuple[list[str], set[str]]:
    """Check every fragment the producer stored for the answer; return the blocks of its
    deltas, and the payloads that a flush cut in two."""
    r = stack.redis()
    stored = store.get_message(r, chat_id, answer_id)
    assert stored is not None and stored.status == "done", stored
    assert stored.text == MODEL_TEXT
    assert unsafe_parts(stored.html) == []
    log = [json.loads(entry) for entry in store.read_log(r, chat_id, stored.gen)]
    deltas = [entry for entry in log if entry["t"] == "delta"]
    assert [entry["t"] for entry in log] == ["delta"] * len(deltas) + ["done"]
    for entry in deltas:
        assert unsafe_parts(entry.get("blocks", "")) == [], entry
        assert unsafe_parts(entry.get("tail", "")) == [], entry
    assert "".join(entry["text"] for entry in deltas) == MODEL_TEXT
    cuts = list(accumulate(len(entry["text"]) for entry in deltas))
    cut_payloads = {
        name
        for name, (start, end) in payload_spans().items()
        if any(start < cut < end for cut in cuts)
    }
    return [entry.get("blocks", "") for entry in deltas], cut_payloads


@pytest.mark.parametrize("csp", ["enforced", "bypassed"])
def test_corpus_stays_inert_in_chromium(
    browser: Browser, xss_stack: Stack, corpus_model: GatedCorpus, csp: str
) -> None:
    context = browser.new_context(bypass_csp=csp == "bypassed")
    try:
        page = context.new_page()
        watch = Watch(page, xss_stack.base)
        sign_up_in_browser(page, xss_stack.base)
        open_an_empty_chat(page, xss_stack.base)
        chat_id = page.url.rsplit("/", 1)[-1]
        chat_url = page.url
        r = xss_stack.redis()

        cut_payloads: set[str] = set()
        for index, message in enumerate(MESSAGES):
            corpus_model.gate.clear()
            page.locator("#composer-text").fill(message)
            page.get_by_role("button", name="Send").click()
            answers = page.locator("article.answer")
            expect(answers).to_have_count(index + 1)
            answer_id = (answers.nth(index).get_attribute("id") or "").removeprefix("answer-")
            article = page.locator(f"#answer-{answer_id}")
            # The model starts once the answer is on the page (its stream brought it), so
            # the page applies every delta live rather than the finished answer.
            expect(page.locator("section.chat")).to_have_attribute("data-connection", "open")
            corpus_model.gate.set()
            expect(article).to_have_attribute("data-status", "done")

            # The user message: its server render, exactly as sanitized.
            user = page.locator("article.message.user").nth(index)
            user_id = (user.get_attribute("id") or "").removeprefix("message-")
            sent = store.get_message(r, chat_id, user_id)
            assert sent is not None and sent.text == message  # as typed
            assert unsafe_parts(sent.html) == []
            body = user.locator(".message-body").inner_html()
            assert body == watch.as_browser_html(sent.html)

            # The answer: every stored fragment is safe, the page applied each of them live,
            # and it showed exactly what was sanitized, streamed and final.
            blocks, cut = check_stored_answer(xss_stack, chat_id, answer_id)
            cut_payloads |= cut
            events = [
                e for e in page.evaluate("window.__sse") if e["answer"] == article_id(answer_id)
            ]
            assert [e for e in events if e["dropped"]] == []
            assert [e["type"] for e in events] == ["message"] + ["delta"] * len(blocks) + ["end"]
            assert events[0]["id"].endswith(":0")  # the page followed from the start
            built = page.evaluate("window.__blocksBeforeEnd")[article_id(answer_id)]
            assert built == watch.as_browser_html("".join(blocks))
            final = store.get_message(r, chat_id, answer_id)
            assert final is not None
            assert article.locator(".blocks").inner_html() == watch.as_browser_html(final.html)
            assert html.unescape(final.thinking_html) == MODEL_TEXT
            shown = article.locator(".thinking-text").inner_html()  # as text, no markup
            assert shown == watch.as_browser_html(final.thinking_html)
            watch.assert_nothing_ran()

        # The streams cut payloads in two: the page applied half-payload fragments.
        assert len(cut_payloads) >= len(CORPUS) // 2, sorted(cut_payloads)
        assert page.evaluate("window.__midStreamScans") >= len(MESSAGES) * 3
        assert page.evaluate("window.__mutatedElements") > 0
        messages_text = page.locator("#messages").inner_text()
        assert "<script>alert(1)</script>" in messages_text  # shown as text
        assert "{{ 7*7 }}" in messages_text  # not a template

        # The chat's title: the first message's text at once, then the model's (made from
        # this hostile exchange by a background job), live on the page as text.
        first_title = store.title_from(plain_text(render_markdown(MESSAGES[0])))
        assert first_title.startswith("</title><script>")
        wait_until(
            lambda: store.get_chat(r, chat_id).title != first_title,  # type: ignore[union-attr]
            timeout=30,
            what="the model's title",
        )
        title = store.get_chat(r, chat_id).title  # type: ignore[union-attr]
        assert "<" in title  # the model's title is as hostile as its answer
        expect(page.locator("#chat-title")).to_have_text(title)
        assert page.title() == f"{title} · chatapp"
        watch.assert_nothing_ran()

        # The whole chat rendered by the server, and the chat list with its title.
        page.reload()
        expect(page.locator("article.answer[data-status=done]")).to_have_count(len(MESSAGES))
        assert page.title() == f"{title} · chatapp"
        watch.assert_nothing_ran()
        page.goto(xss_stack.base + "/")
        expect(page.locator(f'a[href="/chats/{chat_id}"]')).to_have_text(title)
        watch.assert_nothing_ran()
        assert page.evaluate("window.__scanDocument()") == []
        assert chat_url.endswith(f"/chats/{chat_id}")
    finally:
        context.close()


def article_id(answer_id: str) -> str:
    return f"answer-{answer_id}"
