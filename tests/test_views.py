"""Pages and endpoints: ownership, CSRF, validation, idempotent sends, stop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker

from chatapp import store
from harness.accounts import Person
from harness.page import answer_in
from harness.servers import RedisServer, free_port
from tests.conftest import make_test_app
from tests.storing import keys_and_values


def test_the_chat_list_and_a_new_chat_page_render(alice: Person) -> None:
    assert "No chats yet." in alice.client.get("/").text
    chat_id = alice.new_chat()
    page = alice.client.get(f"/chats/{chat_id}")
    assert page.status_code == 200
    assert 'id="composer"' in page.text and "Offline model" in page.text
    assert f'href="/chats/{chat_id}"' in alice.client.get("/").text


def test_the_new_chat_page_stores_nothing_until_its_first_message(
    alice: Person, r: redis.Redis
) -> None:
    before = keys_and_values(r)
    page = alice.client.get("/chats/new")
    assert page.status_code == 200
    assert re.search(r"<textarea [^>]*data-composer autofocus", page.text)  # typing starts here
    for refused, status in [({"text": " "}, 400), ({"text": "x" * 16_001}, 413)]:
        data = {"client_id": "client-0001", **refused, "csrf_token": alice.token}
        assert alice.client.post("/chats", data=data).status_code == status
    assert keys_and_values(r) == before

    first = {"text": "Hello *there*", "client_id": "client-0001", "csrf_token": alice.token}
    sent = alice.client.post("/chats", data=first)
    assert sent.status_code == 303
    chat_id = sent.headers["location"].rsplit("/", 1)[-1]
    messages = store.get_messages(r, chat_id)
    assert [(m.role, m.status) for m in messages] == [("user", "done"), ("assistant", "queued")]
    assert r.llen("rq:queue:test") == 1
    stored = keys_and_values(r)
    again = alice.client.post("/chats", data=first)  # a resend (a double click, a retry)
    assert again.headers["location"] == sent.headers["location"]
    assert keys_and_values(r) == stored
    (owner,) = {store.get_chat(r, chat_id).owner}  # type: ignore[union-attr]
    assert [chat.id for chat in store.list_chats(r, owner)] == [chat_id]
    assert r.llen("rq:queue:test") == 1


def test_sending_stores_the_message_and_returns_the_streaming_answer(
    alice: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    response = alice.send(chat_id, "Hello *world*")
    assert response.status_code == 200
    answer_id = answer_in(response.text)
    assert f'sse-connect="/chats/{chat_id}/messages/{answer_id}/stream"' in response.text
    assert "<em>world</em>" in response.text
    assert 'hx-swap-oob="true"' in response.text  # a fresh composer
    messages = store.get_messages(r, chat_id)
    assert [(m.role, m.status) for m in messages] == [("user", "done"), ("assistant", "queued")]
    assert r.llen("rq:queue:test") == 1
    page = alice.client.get(f"/chats/{chat_id}").text  # one stream for the whole chat page
    assert page.count("sse-connect=") == 1
    assert f'sse-connect="/chats/{chat_id}/live"' in page
    assert 'data-cursor="c3.' in page  # the title, the message, the answer started
    assert f'hx-post="/chats/{chat_id}/messages/{answer_id}/stop"' in page


def test_line_breaks_in_a_sent_message_are_kept(alice: Person, r: redis.Redis) -> None:
    """A person's single line breaks stay (answers keep markdown's rule, where they join)."""
    chat_id = alice.new_chat()
    sent = alice.send(chat_id, text="Dear model,\nline two\n\n- a list\n- item")
    assert sent.status_code == 200
    assert "Dear model,<br>\nline two" in sent.text
    (question, _) = store.get_messages(r, chat_id)
    assert question.text == "Dear model,\nline two\n\n- a list\n- item"  # as typed
    assert "<br>" in question.html and "<li>item</li>" in question.html


def test_the_same_client_message_id_sent_twice_is_stored_once(
    alice: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    first = alice.send(chat_id, "once", client_id="same-id-123")
    again = alice.send(chat_id, "once", client_id="same-id-123")
    assert first.status_code == again.status_code == 200
    assert len(store.get_messages(r, chat_id)) == 2
    assert r.llen("rq:queue:test") == 1


def test_a_send_while_an_answer_runs_is_refused_with_a_reason(
    alice: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    alice.send(chat_id, "first", client_id="client-0001")
    before = keys_and_values(r)
    response = alice.send(chat_id, "second", client_id="client-0002")
    assert response.status_code == 409
    assert "still being written" in response.text
    assert response.headers["HX-Retarget"] == "#flash"
    assert keys_and_values(r) == before


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ({"text": "   "}, 400, "Write a message"),
        ({"client_id": "bad id!"}, 400, "reload the page"),
        ({"client_id": ""}, 400, "reload the page"),
        ({"text": "x" * 16_001}, 413, "the limit is 16,000"),
    ],
)
def test_bad_sends_get_a_clear_4xx_and_change_nothing(
    alice: Person, r: redis.Redis, data: dict[str, str], status: int, message: str
) -> None:
    chat_id = alice.new_chat()
    before = keys_and_values(r)
    response = alice.send(chat_id, **({"text": "hi", "client_id": "client-0001"} | data))
    assert response.status_code == status
    assert message in response.text
    assert keys_and_values(r) == before


def test_a_request_without_the_csrf_token_is_refused(alice: Person, r: redis.Redis) -> None:
    chat_id = alice.new_chat()
    before = keys_and_values(r)
    response = alice.send(chat_id, csrf=False)
    assert response.status_code == 400
    assert "Reload it" in response.text
    assert alice.client.post("/chats").status_code == 400
    assert keys_and_values(r) == before


def test_someone_elses_chat_is_a_404_like_a_missing_one(
    alice: Person, bob: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    answer_id = answer_in(alice.send(chat_id).text)
    before = keys_and_values(r)
    missing = "0123456789abcdef"
    for target in (chat_id, missing, "not-an-id"):
        assert bob.client.get(f"/chats/{target}").status_code == 404
        assert bob.send(target, client_id="client-0009").status_code == 404
        assert bob.post(f"/chats/{target}/messages/{answer_id}/stop").status_code == 404
    stream = bob.client.get(f"/chats/{chat_id}/messages/{answer_id}/stream")
    assert stream.status_code == 200  # never an error status for the SSE extension
    assert stream.text.startswith("event: end\n")
    assert "not available" in stream.text
    assert keys_and_values(r) == before


def test_stop_ends_a_running_answer_and_is_a_no_op_afterwards(
    alice: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    answer_id = answer_in(alice.send(chat_id).text)
    url = f"/chats/{chat_id}/messages/{answer_id}/stop"
    assert alice.post(url).status_code == 204
    message = store.get_message(r, chat_id, answer_id)
    assert message is not None and message.status == "stopped"
    before = keys_and_values(r)
    assert alice.post(url).status_code == 204
    assert keys_and_values(r) == before
    user_id = store.get_messages(r, chat_id)[0].id
    assert alice.post(f"/chats/{chat_id}/messages/{user_id}/stop").status_code == 404


def test_pages_carry_a_strict_content_security_policy(alice: Person, client: FlaskClient) -> None:
    chat_id = alice.new_chat()
    for response in (
        alice.client.get("/"),
        alice.client.get(f"/chats/{chat_id}"),
        alice.client.get("/admin"),  # alice signed up first: the admin
        client.get("/login"),
        client.get("/signup"),
    ):
        assert response.status_code == 200
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"
        scripts = re.findall(r"<script[^>]*>", response.text)
        assert scripts and all(' src="/static/' in tag for tag in scripts)  # no inline script
        assert not re.search(r"\son[a-z]+=", response.text)  # no inline event handlers


def test_the_vendored_htmx_files_match_the_names_the_page_loads(alice: Person) -> None:
    client = alice.client
    page = client.get("/").text
    htmx = re.search(r'src="/static/htmx-(\d+\.\d+\.\d+)\.min\.js\?v=[0-9a-f]{12}"', page)
    sse = re.search(r'src="/static/htmx-ext-sse-(\d+\.\d+\.\d+)\.js\?v=[0-9a-f]{12}"', page)
    assert htmx and sse
    htmx_file = client.get(f"/static/htmx-{htmx.group(1)}.min.js")
    assert f'version:"{htmx.group(1)}"' in htmx_file.text
    htmx_file.close()
    assert client.get(f"/static/htmx-ext-sse-{sse.group(1)}.js").status_code == 200
    assert '"allowEval": false' in page and '"includeIndicatorStyles": false' in page
    assert '"allowScriptTags": false' in page  # htmx must not run scripts in swapped content


def test_a_chat_busy_with_a_dead_answer_takes_a_new_message(alice: Person, r: redis.Redis) -> None:
    chat_id = alice.new_chat()
    alice.send(chat_id, "first", client_id="client-0001")
    dead = store.get_messages(r, chat_id)[-1]
    r.delete(store.heartbeat_key(chat_id, dead.gen))  # no worker ever took it
    assert alice.send(chat_id, "second", client_id="client-0002").status_code == 200
    assert store.get_message(r, chat_id, dead.id).status == "error"  # type: ignore[union-attr]
    assert len(store.get_messages(r, chat_id)) == 4


def test_a_resend_after_a_crash_before_queueing_queues_the_answer_once(
    alice: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    # The first attempt stored the message, then the process died before queueing its job.
    store.send_message(r, chat_id, "client-0001", "hello", "<p>hello</p>", "m", 0)
    assert r.llen("rq:queue:test") == 0
    for _ in range(2):  # the browser's resend, then one more
        assert alice.send(chat_id, "hello", client_id="client-0001").status_code == 200
        assert r.llen("rq:queue:test") == 1
    assert len(store.get_messages(r, chat_id)) == 2


def test_a_page_view_ends_an_answer_whose_producer_is_gone(alice: Person, r: redis.Redis) -> None:
    chat_id = alice.new_chat()
    alice.send(chat_id, "first")
    answer = store.get_messages(r, chat_id)[-1]
    store.append(r, chat_id, answer.id, answer.gen, [], 0)  # started ...
    r.delete(store.heartbeat_key(chat_id, answer.gen))  # ... and then its worker died
    page = alice.client.get(f"/chats/{chat_id}").text
    assert store.DEAD_PRODUCER in page and "aria-busy" not in page  # nothing runs


def test_an_answer_that_failed_before_any_text_offers_nothing_to_copy(
    alice: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    alice.send(chat_id, "first")
    answer = store.get_messages(r, chat_id)[-1]
    store.end(r, chat_id, answer.id, answer.gen, store.Terminal("error", message="Boom."))
    page = alice.client.get(f"/chats/{chat_id}").text
    assert "Boom." in page and "Retry" in page
    assert "Copy this answer" not in page


def test_a_chat_is_titled_by_the_text_of_its_first_message(alice: Person, r: redis.Redis) -> None:
    chat_id = alice.new_chat()
    alice.send(chat_id, "How does **resumable** `streaming` work? <b>&amp;</b>")
    title = store.get_chat(r, chat_id).title  # type: ignore[union-attr]
    assert title == "How does resumable streaming work? <b>&</b>"  # as the message reads
    page = alice.client.get(f"/chats/{chat_id}").text
    assert (
        '<h1 id="chat-title">How does resumable streaming work? &lt;b&gt;&amp;&lt;/b&gt;</h1>'
        in page
    )


def test_with_redis_down_pages_say_so_and_streams_ask_to_retry(tmp_path: Path) -> None:
    app = make_test_app(f"redis://127.0.0.1:{free_port()}/0", tmp_path)  # nothing listens there
    client = app.test_client()
    page = client.get("/")
    assert page.status_code == 503 and "not reachable right now" in page.text
    assert page.headers["Retry-After"] == "5"
    with client.session_transaction() as session:
        # A logged-in viewer, whose session and account cannot be read.
        session.update(uid=store.new_id(), sid="s" * 32)
    page = client.get("/")
    assert page.status_code == 503 and "not reachable right now" in page.text
    stream = client.get("/chats/0123456789abcdef/messages/0123456789abcdef/stream")
    assert stream.status_code == 200
    assert re.fullmatch(r": try again shortly\nretry: \d+\n\n", stream.text)


def test_answers_ended_by_the_web_tier_keep_their_log_for_the_configured_time(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    alice = Person(make_test_app(redis_server.url, tmp_path, RETENTION_SECONDS=77))
    chat_id = alice.new_chat()
    alice.send(chat_id, "first", client_id="client-0001")
    answer = store.get_messages(r, chat_id)[-1]
    r.delete(store.heartbeat_key(chat_id, answer.gen))
    alice.client.get(f"/chats/{chat_id}")  # the page view notices the dead answer
    assert store.get_message(r, chat_id, answer.id).status == "error"  # type: ignore[union-attr]
    assert 0 < r.ttl(store.log_key(chat_id, answer.gen)) <= 77


def test_renames_deletes_and_regenerations_are_checked(
    alice: Person, bob: Person, r: redis.Redis
) -> None:
    chat_id = alice.new_chat()
    first = answer_in(alice.send(chat_id, "one").text)
    before = keys_and_values(r)
    for title, status in [("", 400), ("   ", 400), ("x" * 101, 400)]:
        response = alice.post(f"/chats/{chat_id}/title", title=title)
        assert response.status_code == status and "1 to 100 characters" in response.text
    busy = alice.post(f"/chats/{chat_id}/messages/{first}/regenerate")
    assert busy.status_code == 409 and "still being written" in busy.text
    for url in (f"/chats/{chat_id}/title", f"/chats/{chat_id}/delete"):
        assert bob.post(url, title="mine now").status_code == 404  # not theirs: like missing
    assert bob.post(f"/chats/{chat_id}/messages/{first}/regenerate").status_code == 404
    assert keys_and_values(r) == before

    alice.post(f"/chats/{chat_id}/messages/{first}/stop")
    alice.send(chat_id, "two", client_id="client-0002")
    last = store.get_messages(r, chat_id)[-1].id
    alice.post(f"/chats/{chat_id}/messages/{last}/stop")
    before = keys_and_values(r)
    older = alice.post(f"/chats/{chat_id}/messages/{first}/regenerate")
    assert older.status_code == 409 and "Only the last answer" in older.text
    question = store.get_messages(r, chat_id)[0].id
    assert alice.post(f"/chats/{chat_id}/messages/{question}/regenerate").status_code == 404
    assert keys_and_values(r) == before
    assert alice.post(f"/chats/{chat_id}/messages/{last}/regenerate").status_code == 204
    again = store.get_messages(r, chat_id)[-1]  # a new version; the old one stays
    assert again.status == "queued" and again.text == "" and again.versions == (last, again.id)


def test_a_chat_exports_as_markdown_and_json_to_its_owner_only(
    redis_server: RedisServer, r: redis.Redis, tmp_path: Path
) -> None:
    app = make_test_app(redis_server.url, tmp_path, OFFLINE_TOKENS_PER_SECOND=0)
    alice, bob = Person(app), Person(app)
    chat_id = alice.new_chat()
    assert alice.send(chat_id, 'Say "hi" — in *markdown*').status_code == 200
    queue: Queue = app.extensions["queue"]
    with app.app_context():  # the answer is written here, as RQ's work horse writes it
        SimpleWorker([queue], connection=queue.connection).work(burst=True)
    question, answer = store.get_messages(r, chat_id)
    assert answer.status == "done" and answer.text

    markdown = alice.client.get(f"/chats/{chat_id}/export.md")
    assert markdown.status_code == 200
    assert markdown.mimetype == "text/markdown"
    assert "attachment" in markdown.headers["Content-Disposition"]
    chat = store.get_chat(r, chat_id)
    assert chat is not None and markdown.text.startswith(f"# {chat.title}\n")
    assert 'Say "hi" — in *markdown*' in markdown.text  # as typed, not as rendered
    assert answer.text.rstrip() in markdown.text
    assert "**Assistant (offline model)**" in markdown.text

    exported = alice.client.get(f"/chats/{chat_id}/export.json")
    assert exported.status_code == 200
    document = json.loads(exported.text)
    assert [(m["role"], m["status"], m["text"]) for m in document["messages"]] == [
        ("user", "done", question.text),
        ("assistant", "done", answer.text),
    ]
    assert bob.client.get(f"/chats/{chat_id}/export.json").status_code == 404
    assert alice.client.get(f"/chats/{chat_id}/export.exe").status_code == 404
