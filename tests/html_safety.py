"""Checks that an HTML fragment is inert: only allowlisted tags, attributes and URL schemes."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

from chatapp.render import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, URL_SCHEMES

# The app's own wrappers around model content (see chatapp/frames.py).
APP_ATTRIBUTES = {"class", "id", "hx-disable", "hx-swap-oob"}


class _Checker(HTMLParser):
    def __init__(self, app_markup: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.app_markup = app_markup
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | {"rel"}
            if self.app_markup and tag == "div":
                allowed |= APP_ATTRIBUTES
            if name not in allowed:
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "href" and value is not None:
                scheme = urlsplit(value.strip()).scheme.lower()  # "" for a relative link
                if scheme and scheme not in URL_SCHEMES:
                    self.problems.append(f"href scheme {scheme}")


def unsafe_parts(html: str, app_markup: bool = False) -> list[str]:
    """Return what is not allowed in `html` (empty when it is safe)."""
    checker = _Checker(app_markup)
    checker.feed(html)
    checker.close()
    return checker.problems
