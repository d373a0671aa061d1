"""gunicorn settings for the floor and the peer: chatapp's own (gunicorn.conf.py) without
its hook, which starts chatapp's hub, so that all three run under the same setup."""

from pathlib import Path
from runpy import run_path

_chatapp = run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
globals().update(
    (name, value)
    for name, value in _chatapp.items()
    if not name.startswith("_") and not callable(value) and name != "os"
)
on_exit = _chatapp["on_exit"]  # removes the metrics folder that gunicorn.conf.py made
