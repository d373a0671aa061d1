"""Screenshots of the chat page for docs/how-it-works.md: desktop light, desktop dark and a phone.

`make screenshots` runs this: it starts its own Redis, RQ worker and gunicorn (offline
model) on free loopback ports, writes a chat in headless Chromium and saves the PNGs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from harness.accounts import PASSWORD, sign_up_in_browser, start_a_chat
from harness.servers import running_stack
from tests.conftest import CHROMIUM_ARGS

QUESTIONS = [
    "How does chatapp keep an answer going when I close the tab?",
    "Show me a small Python example.",
]
SHOTS = {  # name: (viewport, device scale, colour scheme, mobile)
    "desktop-light": ({"width": 1280, "height": 860}, 1, "light", False),
    "desktop-dark": ({"width": 1280, "height": 860}, 1, "dark", False),
    "phone": ({"width": 390, "height": 844}, 2, "light", True),
}


def write_chat(page: Page, base: str) -> str:
    """Sign up, start a chat, ask the questions; return the chat's URL."""
    sign_up_in_browser(page, base, "ada")
    start_a_chat(page, QUESTIONS[0])
    for number, question in enumerate(QUESTIONS, start=1):
        if number > 1:
            page.locator("#composer-text").fill(question)
            page.get_by_role("button", name="Send").click()
        done = page.locator("article.answer[data-status=done]")
        expect(done).to_have_count(number, timeout=60_000)
    return page.url


def shoot(browser: Browser, base: str, url: str, name: str, out: Path) -> None:
    viewport, scale, scheme, mobile = SHOTS[name]
    context = browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        device_scale_factor=scale,
        color_scheme=scheme,  # type: ignore[arg-type]
        is_mobile=mobile,
    )
    page = context.new_page()
    page.goto(base + "/login")
    page.locator("#name").fill("ada")
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(url)
    expect(page.locator("section.chat")).to_have_attribute("data-connection", "open")
    # The last question at the top, its answer below it.
    page.locator("article.user").last.evaluate("el => el.scrollIntoView()")
    page.screenshot(path=str(out / f"{name}.png"))
    context.close()


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "400", "CHATAPP_FLUSH_MS": "20"}
    with (
        tempfile.TemporaryDirectory() as data,
        running_stack(Path(data), **settings) as stack,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        writer = browser.new_context()
        url = write_chat(writer.new_page(), stack.base)
        writer.close()
        for name in SHOTS:
            shoot(browser, stack.base, url, name, out)
            print(f"wrote {out / name}.png")
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs")
