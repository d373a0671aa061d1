"""Fast unit tests on fakeredis: chat records, their order, and who may load them."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from flask import Flask

from chatapp import store, users
from chatapp.owner import find_chat, load_chat, log_in
from tests.conftest import make_test_app


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def fake_app(fake: fakeredis.FakeRedis, tmp_path: Path) -> Flask:
    app = make_test_app("redis://127.0.0.1:1/0", tmp_path)  # never connected: replaced below
    app.extensions["redis"] = fake
    return app


def test_chats_are_listed_most_recently_updated_first(fake: fakeredis.FakeRedis) -> None:
    owner = store.new_id()
    old = store.create_chat(fake, owner, now=1)
    new = store.create_chat(fake, owner, now=2)
    store.create_chat(fake, store.new_id(), now=3)  # someone else's
    assert [chat.id for chat in store.list_chats(fake, owner)] == [new.id, old.id]
    fake.zadd(store.user_chats_key(owner), {old.id: 5})  # a message arrived in the old one
    assert [chat.id for chat in store.list_chats(fake, owner)] == [old.id, new.id]


def test_a_chat_loads_only_for_its_owner(fake_app: Flask, fake: fakeredis.FakeRedis) -> None:
    with fake_app.test_request_context():
        me = users.create_user(fake, "me", "a long password", others_allowed=True)
        log_in(me)
        mine = store.create_chat(fake, me.id, now=1)
        theirs = store.create_chat(fake, store.new_id(), now=1)
        assert load_chat(mine.id) == mine
        for chat_id in (theirs.id, store.new_id(), "not-an-id", "", "A" * 16):
            assert find_chat(chat_id) is None
        with pytest.raises(Exception) as missing:
            load_chat(theirs.id)
        assert getattr(missing.value, "code", None) == 404


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Hello", "Hello"),
        ("  two\n\nlines  ", "two lines"),
        ("x" * 61, "x" * 59 + "…"),
        ("x" * 60, "x" * 60),
    ],
)
def test_titles_are_one_line_of_at_most_sixty_characters(text: str, title: str) -> None:
    assert store.title_from(text) == title
