"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from chatapp import create_app
from chatapp.connections import share_one_connection

app = create_app()
share_one_connection(app)  # under gunicorn's gevent workers: chat data on one connection
