"""Which models a chat may choose: the ones the model server lists, or the operator's list.

`CHATAPP_MODELS` (comma-separated) is the list when set: an operator narrows what people
may pick, or names models for a server that does not list its own. Otherwise the server's
`GET /models` answers, kept in Redis for `CACHE_SECONDS` so that pages do not ask it each
time; when it cannot be reached, the configured `MODEL` alone is offered for a minute.

The web processes ask with the standard library (they never import `openai`, which only
the answer worker needs), with a short timeout: a page waits for the model server at
most once every few minutes.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.request
from collections.abc import Mapping
from typing import Any

import redis

from chatapp import providers, store

log = logging.getLogger(__name__)

CACHE_SECONDS = 300
UNREACHABLE_SECONDS = 60  # how long a failed listing is kept before asking again
ASK_TIMEOUT_SECONDS = 3.0
MOST_MODELS = 200  # a server listing thousands would make an unusable picker


def default_model(config: Mapping[str, Any]) -> str:
    """The model a chat uses until its owner picks another."""
    return providers.model_label(config)


def available(r: redis.Redis, config: Mapping[str, Any]) -> list[str]:
    """The models a chat may use, the default first."""
    default = default_model(config)
    if providers.uses_offline_model(config):
        return [default]
    listed = _operator_list(config) or _server_models(r, config)
    return [default, *sorted(set(listed) - {default})][:MOST_MODELS]


def still_offered(config: Mapping[str, Any], name: str) -> bool:
    """Whether the model a chat picked earlier still writes its answers (else the default
    does): not if the operator's list no longer names it. A send never waits for the
    model server's list: a model it listed when it was picked is taken to be there still
    (if it is not, the answer ends with the server's own error)."""
    if providers.uses_offline_model(config):
        return name == default_model(config)
    if listed := _operator_list(config):
        return name in listed or name == default_model(config)
    return bool(name)


def _operator_list(config: Mapping[str, Any]) -> list[str]:
    """The models `CHATAPP_MODELS` names (none when it is unset)."""
    names = (name.strip() for name in str(config.get("MODELS") or "").split(","))
    return [name for name in names if name]


def _server_models(r: redis.Redis, config: Mapping[str, Any]) -> list[str]:
    key = store.models_cache_key()
    cached = r.get(key)
    if cached is not None:
        return list(json.loads(cached))
    try:
        names = _ask_server(config)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # away, refused, not JSON
        log.warning("the model server's list of models could not be read: %s", exc)
        r.set(key, "[]", ex=UNREACHABLE_SECONDS)
        return []
    r.set(key, json.dumps(names), ex=CACHE_SECONDS)
    return names


def _ask_server(config: Mapping[str, Any]) -> list[str]:
    base = str(config.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
    request = urllib.request.Request(
        base + "/models", headers={"Authorization": f"Bearer {config['OPENAI_API_KEY']}"}
    )
    with urllib.request.urlopen(request, timeout=ASK_TIMEOUT_SECONDS) as response:
        body = json.loads(response.read(1_000_000))
    entries = body.get("data") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no `data` list in the answer")
    names = (entry.get("id") for entry in entries if isinstance(entry, dict))
    return [name for name in names if isinstance(name, str) and 0 < len(name) <= 200]
