"""A WSGI app for gunicorn: /leak keeps 10,000 bytes per request at a known line
(# LINE: request_leak), / answers without keeping anything."""

import os

KEPT = []


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/leak":
        KEPT.append(bytes(10000))  # LINE: request_leak
    body = ("%d %d\n" % (os.getpid(), len(KEPT))).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
