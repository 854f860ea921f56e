"""A real browser (Debian's chromium, driven by chromedriver through selenium) streams queues.

A small page from another origin subscribes with ``EventSource`` to a public
queue, and through a signed URL to a private one; it shows each message it
receives.  The test posts messages, restarts the server, posts again, and the
page must show every message exactly once: EventSource reconnected by itself
and resumed with ``Last-Event-ID``, across the origins (CORS).

Without chromium and chromedriver this skips, except under ``CI=true``
(``.ci/run`` installs them), where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any

import treq
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest
from twisted.web import resource, server

from tests.processes import free_port, start_queuey

KEY = "browser-key"
SECRET = "browser-test-signing-secret"
CONFIG = """
[application_keys]
web = {key}

[storage]
backend = sqlite
path = {directory}/queuey.sqlite

[cors]
allow_origins = {origin}

[signing]
secret = {secret}

[streams]
retry = 300
"""
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>queuey streams</title></head>
<body>
<h1>Public</h1><ul id="public"></ul>
<h1>Private</h1><ul id="private"></ul>
<script>
const asked = new URLSearchParams(location.search);
function follow(url, id) {
  const list = document.getElementById(id);
  const source = new EventSource(url);
  source.onmessage = (event) => {
    const item = document.createElement("li");
    item.textContent = JSON.parse(event.data).body;
    list.appendChild(item);
  };
}
follow(asked.get("public"), "public");
follow(asked.get("private"), "private");
</script>
</body></html>
"""
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")


def browser_or_skip() -> tuple[str, str]:
    missing = [path for path in CHROMIUM if not os.path.exists(path)]
    if not missing and shutil.which("chromium"):
        return CHROMIUM
    message = f"a browser is not installed ({', '.join(missing)}: apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise AssertionError(f"{message}; under CI this is a failure")
    raise unittest.SkipTest(message)


class Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return PAGE


class BrowserTests(unittest.TestCase):
    timeout = 300

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.chromium, self.chromedriver = browser_or_skip()
        from selenium import webdriver  # noqa: F401  (the test extra; fail early if it is missing)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        page_port = free_port()
        self.page_origin = f"http://localhost:{page_port}"  # not the API's origin (127.0.0.1:<port>)
        listening = reactor.listenTCP(page_port, server.Site(Page()), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.config = os.path.join(self.directory, "queuey.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(key=KEY, directory=self.directory, origin=self.page_origin, secret=SECRET))
        self.port = free_port()
        self.server = yield start_queuey(self, self.config, self.port)
        for form in ({"queue_name": "news", "type": "public"}, {"queue_name": "inbox"}):
            code, document = yield self.request("POST", "/v1/web", data=form)
            self.assertEqual(code, 201, document)

    @defer.inlineCallbacks
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Application {KEY}", **kwargs.pop("headers", {})}
        response = yield treq.request(method, self.server.base + path, persistent=False, headers=headers,
                                      **kwargs)
        return response.code, (yield response.json())

    @defer.inlineCallbacks
    def post(self, queue: str, body: str) -> Any:
        code, document = yield self.request("POST", f"/v1/web/{queue}", data=body.encode(),
                                            headers={"Content-Type": "text/plain"})
        self.assertEqual(code, 201, document)

    def start_browser(self) -> Any:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        options.binary_location = self.chromium
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         f"--user-data-dir={self.directory}/chromium"):
            options.add_argument(argument)
        return webdriver.Chrome(options=options, service=Service(executable_path=self.chromedriver))

    @staticmethod
    def shown(driver: Any, expected: dict[str, list[str]], seconds: float = 60) -> dict[str, list[str]]:
        """Waits (in the browser's thread) until the page shows ``expected``; returns what it shows."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        def lists(d: Any) -> dict[str, list[str]]:
            return d.execute_script(
                "return {public: [...document.querySelectorAll('#public li')].map(e => e.textContent),"
                " private: [...document.querySelectorAll('#private li')].map(e => e.textContent)};")
        try:
            WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: lists(d) == expected)
        except TimeoutException:
            pass
        return lists(driver)

    @defer.inlineCallbacks
    def test_a_page_from_another_origin_streams_a_public_and_a_signed_private_queue(self) -> Any:
        code, signed = yield self.request("POST", "/v1/web/inbox/signed", data={"methods": "GET"})
        self.assertEqual(code, 200, signed)
        yield self.post("news", "news 1")
        yield self.post("inbox", "mail 1")
        from urllib.parse import urlencode
        page = f"{self.page_origin}/?" + urlencode({"public": f"{self.server.base}/v1/web/news",
                                                   "private": self.server.base + signed["url"]})
        driver = yield threads.deferToThread(self.start_browser)
        self.addCleanup(threads.deferToThread, driver.quit)
        yield threads.deferToThread(driver.get, page)
        expected = {"public": ["news 1"], "private": ["mail 1"]}
        self.assertEqual((yield threads.deferToThread(self.shown, driver, expected)), expected)

        yield self.post("news", "news 2")
        yield self.post("inbox", "mail 2")
        expected = {"public": ["news 1", "news 2"], "private": ["mail 1", "mail 2"]}
        self.assertEqual((yield threads.deferToThread(self.shown, driver, expected)), expected)

        os.kill(self.server.transport.pid, signal.SIGTERM)  # the page's streams end...
        yield self.server.ended
        self.server = yield start_queuey(self, self.config, self.port)  # ...and it comes back
        yield self.post("news", "news 3")
        yield self.post("inbox", "mail 3")
        expected = {"public": ["news 1", "news 2", "news 3"], "private": ["mail 1", "mail 2", "mail 3"]}
        # Each shown once: the reconnected streams resumed after their Last-Event-ID.
        self.assertEqual((yield threads.deferToThread(self.shown, driver, expected)), expected)
