"""The admin's job dashboard (rq-dashboard at /admin/rq) in real Chromium, on the real
stack: its own scripts run under its Content-Security-Policy and show the queues, the
jobs, a job and the workers; user text in a job stays text; another site cannot make it
change anything."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect
from rq import Queue

from chatapp.providers import OFFLINE_LABEL
from harness.accounts import (
    PASSWORD,
    new_name,
    open_an_empty_chat,
    sign_up,
    sign_up_in_browser,
    start_a_chat,
)
from harness.servers import Stack, running_stack, wait_until

TIMEOUT_MS = 30_000
# A chat whose first message (and so its title) is markup that would run if inserted as HTML.
FAST = {"CHATAPP_OFFLINE_TOKENS_PER_SECOND": "400"}
HOSTILE = '<img src=x onerror="window.ran=1">Sky <b>blue</b>?'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("dashboard"), **FAST) as stack:
        yield stack


@pytest.fixture(scope="module")
def admin(stack: Stack) -> str:
    """The stack's first account: the admin."""
    name = new_name()
    with httpx.Client(base_url=stack.base) as http:
        sign_up(http, name)
    return name


@pytest.fixture
def page(browser: Browser, stack: Stack, admin: str) -> Iterator[Page]:
    """A tab where the admin is logged in."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(stack.base + "/login")
    page.locator("#name").fill(admin)
    page.locator("#password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(stack.base + "/")
    yield page
    context.close()


def console_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and errors.append(f"{message.text} ({message.location.get('url')})")
        ),
    )
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    return errors


def test_the_dashboard_shows_queues_jobs_a_job_and_workers_in_chromium(
    page: Page, stack: Stack, admin: str
) -> None:
    errors = console_errors(page)
    start_a_chat(page, HOSTILE)
    expect(page.locator("article.answer")).to_have_attribute(
        "data-status", "done", timeout=TIMEOUT_MS
    )
    queue = stack.env["CHATAPP_QUEUE_NAME"]

    page.goto(stack.base + "/admin")
    page.get_by_role("link", name="Job dashboard").click()
    expect(page.locator("#queues tbody tr", has_text=queue)).to_have_count(
        1, timeout=TIMEOUT_MS
    )  # its scripts ran
    expect(page.locator("#queues")).not_to_contain_text("Loading", timeout=TIMEOUT_MS)

    page.goto(f"{stack.base}/admin/rq/0/view/jobs/{queue}/finished/8/asc/1")
    job_row = page.locator("tr[data-role=job]", has_text=f"answer for {admin}")
    expect(job_row).to_have_count(1, timeout=TIMEOUT_MS)
    expect(job_row.locator(".description")).to_contain_text(
        HOSTILE, timeout=TIMEOUT_MS
    )  # the chat's title
    job_row.locator(".job_id a").click()

    description = page.locator("#job-data .description-scroll")
    expect(description).to_contain_text(f"answer for {admin} in “{HOSTILE}”", timeout=TIMEOUT_MS)
    expect(description).to_contain_text(
        f"model: {OFFLINE_LABEL}", timeout=TIMEOUT_MS
    )  # the model the worker used
    expect(description.locator("img")).to_have_count(0, timeout=TIMEOUT_MS)  # the title stays text
    assert page.evaluate("window.ran") is None

    page.get_by_role("link", name="Workers").click()
    expect(page.locator("#workers tbody tr").first).to_contain_text(queue, timeout=TIMEOUT_MS)
    page.get_by_role("link", name="chatapp admin").click()  # the way back
    page.wait_for_url(stack.base + "/admin")
    assert errors == []


def test_another_site_cannot_make_the_dashboard_change_anything(page: Page, stack: Stack) -> None:
    queue = Queue(stack.env["CHATAPP_QUEUE_NAME"], connection=redis.Redis.from_url(stack.queue_url))
    queue.enqueue("chatapp.titles.make_title")  # fails: no arguments
    failed = queue.failed_job_registry
    wait_until(lambda: failed.count == 1, timeout=60, what="a failed job")
    requeue_all = f"{stack.base}/admin/rq/requeue/{queue.name}"
    elsewhere = f"""<a id="get" href="{requeue_all}">requeue</a>
        <form id="post" method="post" action="{requeue_all}"><button>requeue</button></form>"""
    page.route(
        "http://elsewhere.test/",
        lambda route: route.fulfill(body=elsewhere, content_type="text/html"),
    )

    for attack in ("#get", "#post button"):
        page.goto("http://elsewhere.test/")
        with page.expect_navigation() as navigation:
            page.locator(attack).click()
        response = navigation.value
        # Refused: by the dashboard (403), or, for the post, by the browser keeping the
        # session cookie from a cross-site post (then the app asks for a login, 401).
        assert response is not None and response.status in (401, 403), attack
        assert failed.count == 1 and queue.count == 0, attack


def test_the_admin_deletes_an_account_after_confirming_and_its_open_page_says_so(
    page: Page, browser: Browser, stack: Stack
) -> None:
    """In Chromium: a person changes their password on their account page; the admin
    deletes them (after a confirmation) and their open chat page says it is gone."""
    context = browser.new_context()
    try:
        theirs = context.new_page()
        theirs.set_default_timeout(TIMEOUT_MS)
        name = sign_up_in_browser(theirs, stack.base)
        theirs.get_by_role("link", name=name).click()  # their account page
        theirs.locator("#current").fill(PASSWORD)
        theirs.locator("#password").fill("another good password")
        theirs.get_by_role("button", name="Change password").click()
        expect(theirs.get_by_role("status")).to_contain_text(
            "Your password is changed", timeout=TIMEOUT_MS
        )
        theirs.goto(stack.base + "/")
        open_an_empty_chat(theirs, stack.base)

        page.goto(stack.base + "/admin")
        page.once("dialog", lambda dialog: dialog.accept())  # "Delete ... This cannot be undone."
        page.get_by_role("button", name=f"Delete {name} and their chats").click()
        expect(page.locator(".user-list")).not_to_contain_text(name, timeout=TIMEOUT_MS)
        expect(theirs.locator(".chat-gone")).to_be_visible(timeout=TIMEOUT_MS)
    finally:
        context.close()
