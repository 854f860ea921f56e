"""The long-poll fan-out ceilings: a bare twisted.web server that holds reads and wakes them.

Run by bench/longpoll_bench.py as ``twistd -n --pidfile= -l LOG -y bench/fanout_ceiling.tac``
(the same twistd, reactor and logging as ``twistd queuey``), with

* ``BENCH_CEILING_PORT``: the TCP port to listen on (127.0.0.1 only);
* ``CEILING_MODE``: how a post answers the reads held for its queue:

  ``web`` (the default)
      the twisted.web way, each held request on its own: ``setHeader``
      Content-Type and Content-Length, ``write(body)``, ``finish()``;
  ``socket``
      what the machine can do: the whole response (status line, headers,
      body) is built once and ``send()`` straight to each held request's
      socket; once all are sent, each request is finished without writing.

No Queuey code, no routing, no authentication, no storage, no access log
(see QuietSite): only what longpoll_bench needs to run its scenarios unchanged.

* ``GET /__lbheartbeat__``: 200 ``{"status":"ok"}`` (the bench's "it is up");
* ``GET /metrics``: ``queuey_longpolls_held N``, the requests held now;
* any other GET: held (``NOT_DONE_YET``) under its path, query string left
  out, until a post to that path or until the client goes away;
* ``POST /v1/<app>``: 201 (a queue "created": nothing to create here);
* ``POST /v1/<app>/<queue>``: the reads held on ``/v1/<app>/<queue>`` are
  answered 200 with one message, shaped like Queuey's answer (its body is
  "wake" whatever was posted), then the post is answered 201.
"""

import os
import time
import uuid

from twisted.application import service, strports
from twisted.web import http, resource, server

PORT = int(os.environ["BENCH_CEILING_PORT"])
MODE = os.environ.get("CEILING_MODE", "web")
if MODE not in ("web", "socket"):
    raise SystemExit(f"CEILING_MODE must be web or socket, not {MODE!r}")

JSON = b"application/json"
HEARTBEAT = b'{"status":"ok"}'

#: path (no query string) -> the requests held on it (a dict: ordered, and O(1) to forget one)
held: dict[bytes, dict[server.Request, None]] = {}


def forget(_: object, path: bytes, request: server.Request) -> None:
    """Answered, or the client went away: no longer held (an emptied path is dropped)."""
    waiting = held.get(path)
    if waiting is not None:
        waiting.pop(request, None)
        if not waiting:
            del held[path]


def wake(requests: list[server.Request], body: bytes) -> None:
    """Answer each of ``requests`` 200 with ``body``, the way CEILING_MODE says."""
    if MODE == "web":
        length = b"%d" % len(body)
        for request in requests:
            request.setHeader(b"Content-Type", JSON)
            request.setHeader(b"Content-Length", length)
            request.write(body)
            request.finish()
        return
    # socket: the response bytes once, with the headers twisted.web would have sent
    data = b"".join([b"HTTP/1.1 200 OK\r\nServer: ", server.version, b"\r\nDate: ", http.datetimeToString(),
                     b"\r\nContent-Type: ", JSON, b"\r\nContent-Length: %d\r\n\r\n" % len(body), body])
    for request in requests:
        transport = request.channel.transport
        try:  # nothing was written to a held request yet, so nothing is queued ahead of this
            sent = transport.getHandle().send(data)
        except OSError:  # BlockingIOError (the socket is full), or a close the reactor has not seen yet
            sent = 0
        if sent < len(data):
            transport.write(data[sent:])  # the reactor sends the rest when the socket takes it
    for request in requests:  # every answer is out before the first request's bookkeeping
        request.startedWriting = 1  # the response is out: finish() must not write headers of its own
        request.finish()


class FanoutCeiling(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes | int:
        if request.path == b"/__lbheartbeat__":
            request.setHeader(b"Content-Type", JSON)
            return HEARTBEAT
        if request.path == b"/metrics":
            request.setHeader(b"Content-Type", b"text/plain")
            return b"queuey_longpolls_held %d\n" % sum(map(len, held.values()))
        held.setdefault(request.path, {})[request] = None
        done = request.notifyFinish()
        done.addBoth(forget, request.path, request)
        return server.NOT_DONE_YET

    def render_POST(self, request: server.Request) -> bytes:
        parts = request.path.strip(b"/").split(b"/")
        request.setHeader(b"Content-Type", JSON)
        if len(parts) == 2 and parts[0] == b"v1":  # "create a queue"
            request.setResponseCode(201)
            return b'{"status":"ok"}'
        if len(parts) != 3 or parts[0] != b"v1":
            request.setResponseCode(404)
            return b'{"status":"error"}'
        hex_id, timestamp = uuid.uuid1().hex, f"{time.time():.7f}"
        message = (b'{"message_id":"%s","timestamp":"%s","partition":1,"content_type":"text/plain","body":"wake"}'
                   % (hex_id.encode(), timestamp.encode()))
        wake(list(held.pop(request.path, {})), b'{"status":"ok","messages":[%s]}' % message)
        request.setResponseCode(201)
        return b'{"status":"ok","messages":[{"key":"%s","timestamp":"%s","partition":1}]}' % (
            hex_id.encode(), timestamp.encode())


class QuietSite(server.Site):
    """No access log: twisted.web's default makes each request a log event of its own, which
    costs more than the rest of a woken read (Queuey batches its lines), and a ceiling must not
    do work Queuey does not."""

    def log(self, request: server.Request) -> None:
        pass


site = QuietSite(FanoutCeiling())
site.displayTracebacks = False
application = service.Application("queuey-bench-fanout-ceiling")
# backlog as longpoll_bench gives twistd queuey: thousands of reads connect at once
strports.service(f"tcp:{PORT}:interface=127.0.0.1:backlog=4096", site).setServiceParent(application)
