"""The chat store: the only code that knows chat key names (accounts: `users.py`).

- `keys`: every key and channel name of a chat, and ids;
- `records`: a chat and its messages, and reading them;
- `chats`: changing chats (create, send, regenerate, rename, delete), each one Lua script;
- `logs`: answer logs (the fenced append, ends, dead producers) and chat event logs;
- `nudges`: telling a user's pages that their chat list changed.

The rest of the app calls them as `store.<name>`: what each module offers is here.
"""

from __future__ import annotations

from chatapp.store.chats import (
    CLAIM_TTL_SECONDS,
    SendResult,
    claim_new_chat,
    create_chat,
    delete_chat,
    forget_new_chat,
    regenerate,
    rename_chat,
    running_answers,
    send_message,
    set_chat_options,
    set_model,
    title_from,
)
from chatapp.store.keys import (
    ID_PATTERN,
    PREFIX,
    channel,
    chat_key,
    claim_key,
    events_key,
    heartbeat_key,
    is_cluster,
    is_id,
    log_key,
    message_key,
    messages_key,
    models_cache_key,
    new_chat_claim_key,
    new_id,
    publish_command,
    user_channel,
    user_chats_key,
    user_lock_key,
)
from chatapp.store.logs import (
    DEAD_PRODUCER,
    DEAD_QUEUED,
    AppendResult,
    Terminal,
    Timing,
    append,
    chat_event_count,
    chat_events,
    end,
    end_if_dead,
    is_alive,
    log_length,
    read_log,
)
from chatapp.store.nudges import (
    nudge,
)
from chatapp.store.records import (
    Chat,
    Message,
    get_chat,
    get_chat_and_messages,
    get_message,
    get_messages,
    list_chats,
    read_chat,
)

__all__ = [
    "CLAIM_TTL_SECONDS",
    "DEAD_PRODUCER",
    "DEAD_QUEUED",
    "ID_PATTERN",
    "PREFIX",
    "AppendResult",
    "Chat",
    "Message",
    "SendResult",
    "Terminal",
    "Timing",
    "append",
    "channel",
    "chat_event_count",
    "chat_events",
    "chat_key",
    "claim_key",
    "claim_new_chat",
    "create_chat",
    "delete_chat",
    "end",
    "end_if_dead",
    "events_key",
    "forget_new_chat",
    "get_chat",
    "get_chat_and_messages",
    "get_message",
    "get_messages",
    "heartbeat_key",
    "is_alive",
    "is_cluster",
    "is_id",
    "list_chats",
    "log_key",
    "log_length",
    "message_key",
    "messages_key",
    "models_cache_key",
    "new_chat_claim_key",
    "new_id",
    "nudge",
    "publish_command",
    "read_chat",
    "read_log",
    "regenerate",
    "rename_chat",
    "running_answers",
    "send_message",
    "set_chat_options",
    "set_model",
    "title_from",
    "user_channel",
    "user_chats_key",
    "user_lock_key",
]
