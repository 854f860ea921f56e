"""The benchmark's ceiling: a bare twisted.web server answering Queuey's three bench shapes.

Run by bench/http_bench.py as ``twistd -n --pidfile= -l LOG -y bench/ceiling.tac``
(so it gets the same reactor, logging and access log as ``twistd queuey``), with

* ``BENCH_CEILING_PORT``: the TCP port to listen on (127.0.0.1 only);
* ``BENCH_CANNED_DIR``: a directory holding ``post_single.json``,
  ``post_batch.json`` and ``get_messages.json``: real responses captured from
  Queuey for the same requests, served here byte for byte.

What it does per request (and nothing else: no routing, no authentication,
no storage, no metrics):

* POST with ``Content-Type: application/json``: read the body, parse it with
  orjson (as Queuey would), answer 201 with the canned batch response;
* any other POST: read the body, answer 201 with the canned single response;
* GET: answer 200 with the canned 100-message read.
"""

import os

import orjson
from twisted.application import service, strports
from twisted.web import resource, server

PORT = int(os.environ["BENCH_CEILING_PORT"])
CANNED = os.environ["BENCH_CANNED_DIR"]


def _canned(name: str) -> bytes:
    with open(os.path.join(CANNED, name), "rb") as handle:
        return handle.read()


POST_SINGLE = _canned("post_single.json")
POST_BATCH = _canned("post_batch.json")
GET_MESSAGES = _canned("get_messages.json")
HEARTBEAT = b'{"status":"ok"}'
JSON = b"application/json"


class Ceiling(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        if request.path == b"/__lbheartbeat__":
            return HEARTBEAT
        return GET_MESSAGES

    def render_POST(self, request: server.Request) -> bytes:
        body = request.content.read()
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        request.setResponseCode(201)
        request.setHeader(b"Content-Type", JSON)
        if content_type == JSON:
            document = orjson.loads(body)
            if not document.get("messages"):
                request.setResponseCode(400)
                return b'{"status":"error"}'
            return POST_BATCH
        if not body:
            request.setResponseCode(400)
            return b'{"status":"error"}'
        return POST_SINGLE


site = server.Site(Ceiling())
site.displayTracebacks = False
application = service.Application("queuey-bench-ceiling")
strports.service(f"tcp:{PORT}:interface=127.0.0.1", site).setServiceParent(application)
