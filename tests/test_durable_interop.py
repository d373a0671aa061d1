"""Outside clients of the Durable Streams protocol read a running answer to its end through
the whole stack (gunicorn, the RQ worker that `make run` starts, Redis), with a personal
access token, while their connection is cut several times: the TypeScript client
(@durable-streams/client, under node) and the Python one (`durable-streams` on PyPI). Each
gets the answer's log exactly, nothing lost or doubled."""

from __future__ import annotations

import json
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from durable_streams import DurableStreamError, stream
from playwright.sync_api import Browser, expect

from chatapp import contract, store
from harness.accounts import (
    BROWSER_TIMEOUT_MS,
    csrf_token,
    sign_up_in_browser,
    start_a_chat,
)
from harness.client import ChatClient
from harness.servers import Stack, running_stack, wait_until
from tests.tcp_proxy import CuttingProxy

SUITE_DIR = Path(__file__).parent / "durable_streams"
CUTS = 4


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Answers written slowly enough (the offline model at 30 tokens a second) to be cut
    several times while they run."""
    settings = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "30", "CHATAPP_FLUSH_MS": "20"}
    with running_stack(tmp_path_factory.mktemp("interop"), **settings) as stack:
        yield stack


@pytest.fixture
def proxy(slow_stack: Stack) -> Iterator[CuttingProxy]:
    cutting = CuttingProxy(int(slow_stack.base.rsplit(":", 1)[1]))
    yield cutting
    cutting.close()


def _token(client: ChatClient) -> str:
    """A personal access token, made on the account page as a person would."""
    page = client.http.get("/account")
    made = client.http.post(
        "/account/tokens", data={"name": "interop", "csrf_token": csrf_token(page.text)}
    )
    assert made.status_code == 200, made.text
    start = made.text.index("chatapp_pat_")
    return made.text[start : made.text.index('"', start)]


def _running_answer(stack: Stack, proxy: CuttingProxy) -> tuple[str, str, str, str]:
    """A new user's answer, just started: its chat, its stream's path (found as a script
    would: the chat's event stream names the generation that started), that stream's URL
    through the proxy, and a token of the user's."""
    client = ChatClient(stack.base)
    chat_id = client.new_chat()
    answer_id = client.send_ok(chat_id, "Tell me a long story about resumable streams.")
    events = client.http.get(f"/chats/{chat_id}/events").json()
    (started,) = [e for e in events if e["t"] == contract.ANSWER_STARTED and e["m"] == answer_id]
    path = f"/chats/{chat_id}/messages/{answer_id}/generations/{started['g']}"
    return chat_id, path, f"http://127.0.0.1:{proxy.port}{path}", _token(client)


def _cut_while_running(proxy: CuttingProxy, ended: threading.Event, cuts: list[int]) -> None:
    """Cut the reader's connection `CUTS` times, each after a few events (now and then
    between a data event and its control event); count them in `cuts`."""
    for _ in range(CUTS):
        proxy.arm(after=random.randint(1, 6))
        wait_until(lambda: proxy.cut.is_set() or ended.is_set(), timeout=120, what="a cut")
        if not proxy.cut.is_set():
            return
        cuts.append(1)


def _log(stack: Stack, chat_id: str, path: str) -> list[str]:
    generation_id = path.rsplit("/", 1)[1]
    return store.read_log(stack.redis(), chat_id, generation_id)


def _joined(batches: list[str]) -> str:
    """The entries of JSON-array batches, as they were sent, one after another."""
    return ",".join(batch[1:-1] for batch in batches if batch[1:-1])


def test_the_typescript_client_reads_a_running_answer_through_cuts_byte_for_byte(
    slow_stack: Stack, proxy: CuttingProxy
) -> None:
    chat_id, path, url, token = _running_answer(slow_stack, proxy)
    ended, cuts = threading.Event(), list[int]()
    cutter = threading.Thread(target=_cut_while_running, args=(proxy, ended, cuts))
    cutter.start()
    reader = subprocess.run(
        ["node", "read_answer.mjs", url, token],
        cwd=SUITE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    ended.set()
    cutter.join()
    assert reader.returncode == 0, reader.stderr[-3000:]
    got = json.loads(reader.stdout)
    log = _log(slow_stack, chat_id, path)
    # Each batch is a JSON array of the log's entries, as they are stored.
    # (The client also hands out an empty text for a control event that came alone.)
    assert _joined(got["texts"]) == ",".join(log)
    assert got["offset"] == f"{len(log):016d}"
    assert json.loads(log[-1])["t"] == contract.DONE
    assert got["resumed"] == len(cuts) == CUTS


def test_the_python_client_reads_a_running_answer_through_cuts_byte_for_byte(
    slow_stack: Stack, proxy: CuttingProxy
) -> None:
    chat_id, path, url, token = _running_answer(slow_stack, proxy)
    texts, offset, cuts = [], "-1", 0
    # A script's loop: read from the last offset a control event confirmed, until the
    # answer's terminal entry (this client version knows nothing of closed streams).
    while not texts or json.loads(texts[-1])[-1]["t"] not in contract.TERMINAL:
        if cuts < CUTS:
            proxy.arm(after=random.randint(1, 6))
        try:
            headers = {"Authorization": f"Bearer {token}"}
            with stream(url, offset=offset, live="sse", headers=headers, timeout=30) as res:
                for event in res.iter_events(mode="text"):
                    texts.append(event.data)
                    offset = event.next_offset
        except (httpx.HTTPError, DurableStreamError):
            cuts += 1
    assert cuts >= CUTS
    log = _log(slow_stack, chat_id, path)
    assert _joined(texts) == ",".join(log)
    assert offset == f"{len(log):016d}"


def test_in_chromium_a_token_is_made_shown_once_used_and_revoked(
    slow_stack: Stack, browser: Browser
) -> None:
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    sign_up_in_browser(page, slow_stack.base)
    page.goto(f"{slow_stack.base}/account")
    page.get_by_label("A name for a new token").fill("my laptop's script")
    page.get_by_role("button", name="Make a token").click()
    shown = page.get_by_label("Your new access token")
    expect(shown).to_be_visible()
    token = shown.input_value()
    assert token.startswith("chatapp_pat_")
    page.locator(".new-token-row").get_by_role("button", name="Copy").click()
    expect(page.locator(".new-token-row button")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == token
    expect(page.locator(".token-list")).to_contain_text("my laptop's script")
    # Its chat's events, read with the token alone.
    page.goto(slow_stack.base)
    chat_url = start_a_chat(page, "Hello from Chromium")
    events_url = chat_url.replace(slow_stack.base, "") + "/events"
    # The app's own page reads the stream with its session cookie, as any script of the
    # page would: a fetch, and an EventSource to the answer's end event.
    events = page.evaluate("url => fetch(url).then(response => response.json())", events_url)
    started = [e for e in events if e["t"] == contract.ANSWER_STARTED][-1]
    answer_url = (
        f"{events_url[: -len('/events')]}/messages/{started['m']}/generations/{started['g']}"
    )
    last_control = page.evaluate(
        """url => new Promise(resolve => {
            const source = new EventSource(url + "?offset=-1&live=sse")
            source.addEventListener("control", event => {
                const control = JSON.parse(event.data)
                if (control.streamClosed) { source.close(); resolve(control) }
            })
        })""",
        answer_url,
    )
    log = store.read_log(slow_stack.redis(), chat_url.rsplit("/", 1)[1], started["g"])
    assert last_control == {
        "streamNextOffset": f"{len(log):016d}",
        "streamClosed": True,
        "upToDate": True,
    }
    with httpx.Client(base_url=slow_stack.base) as http:
        auth = {"Authorization": f"Bearer {token}"}
        assert http.get(events_url, headers=auth).status_code == 200
        page.goto(f"{slow_stack.base}/account")
        expect(page.get_by_label("Your new access token")).to_have_count(0)  # shown once
        page.get_by_role("button", name="Revoke the token my laptop's script").click()
        expect(page.get_by_role("status")).to_contain_text("revoked")
        expect(page.locator(".token-list")).to_have_count(0)
        assert http.get(events_url, headers=auth).status_code == 401
    assert errors == []
    context.close()
