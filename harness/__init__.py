"""What the tests and the benchmark both run against: real servers on free loopback ports
(redis-server, gunicorn, the RQ worker, nginx), accounts, a client that reads the chat
page's stream as a tab does, and a fake OpenAI-compatible model server."""
