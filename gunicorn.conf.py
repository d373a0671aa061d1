"""gunicorn settings for chatapp: gevent workers that hold many long SSE responses."""

import os
import shutil
import tempfile

# CHATAPP_BIND; else $PORT on every interface, as Procfile platforms (and honcho) set it.
_port = os.environ.get("PORT")
bind = os.environ.get("CHATAPP_BIND") or (f"0.0.0.0:{_port}" if _port else "127.0.0.1:8000")
workers = int(os.environ.get("CHATAPP_WEB_WORKERS", "2"))
worker_class = "gevent"
# Each SSE viewer holds one connection. chatapp refuses streams above
# CHATAPP_SSE_MAX_PER_PROCESS (default 900, answered with `retry:`) so pages still load.
worker_connections = int(os.environ.get("CHATAPP_WORKER_CONNECTIONS", "1000"))
timeout = 30  # the gevent worker's heartbeat, not a request timeout
graceful_timeout = 10
keepalive = 5
preload_app = False  # everything per-process (Redis pools, the pub/sub hub) starts after the fork
accesslog = "-" if os.environ.get("CHATAPP_ACCESS_LOG") else None
errorlog = "-"
loglevel = os.environ.get("CHATAPP_LOG_LEVEL", "info")
# gunicorn 27's control socket sits at one path per user (~/.gunicorn/gunicorn.ctl), so two
# instances on one machine (say, a second checkout, or the tests) would take it from each
# other. chatapp does not use it.
control_socket_disable = True

# Prometheus: every worker process keeps its own delivery-latency histogram; in
# multiprocess mode they write it to files in one folder, and a scrape of any process adds
# them all up. Set here, in the master, before any worker imports prometheus-client.
# An operator's own folder (PROMETHEUS_MULTIPROC_DIR) is used as it is; a reload (HUP)
# reads this file again and keeps the folder made the first time.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatapp-metrics-")
    os.environ["CHATAPP_MADE_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def on_exit(server):
    """Remove the metrics folder this master made (the figures restart with it)."""
    made = os.environ.get("CHATAPP_MADE_METRICS_DIR")
    if made and made == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(made, ignore_errors=True)


def post_worker_init(worker):
    """Start this process's pub/sub hub now, and close its streams when the worker stops.

    On SIGTERM gunicorn stops accepting and waits up to graceful_timeout for responses to
    end; SSE responses never end by themselves. Draining the hub ends each one with a
    `retry:` hint, so browsers reconnect (with their Last-Event-ID) to another process.
    """
    import gevent

    from chatapp import heap
    from chatapp.connections import get_hub

    with worker.wsgi.app_context():
        get_hub()
    heap.settle()  # after the app and its hub: see chatapp/heap.py

    def close_streams_when_stopping():
        while worker.alive:
            gevent.sleep(0.25)
        hub = worker.wsgi.extensions["hub"]  # the current one (a dead hub is replaced)
        if hub is not None:
            hub.drain()

    gevent.spawn(close_streams_when_stopping)
