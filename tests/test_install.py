"""`make run` installs only the app's own dependencies (no test extras): the app must start
with exactly those. A package used but not declared (or declared only by a test tool that
happens to bring it) would pass every other test and break the quick start."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

from harness.servers import PROJECT_DIR

START = """
from chatapp import create_app
app = create_app({"SECRET_KEY": "x", "DATA_DIR": %r})
assert "rq_dashboard" in app.blueprints and "ops" in app.blueprints
import gunicorn.workers.ggevent  # the web's gevent worker
from chatapp import openai_model, worker  # the answer worker's own (openai, orjson, rq)
print("started")
"""


def test_the_app_starts_with_only_its_declared_dependencies(tmp_path: Path) -> None:
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    python = str(home / "bin" / "python")
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*install, str(PROJECT_DIR)], check=True, capture_output=True, timeout=600)
    started = subprocess.run(
        [python, "-c", START % str(tmp_path / "data")],
        cwd=tmp_path,  # not the checkout: the installed package only
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.stdout.strip() == "started", started.stderr[-2000:]
