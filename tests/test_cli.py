"""The ``queuey`` command as a person (or a script) meets it: real processes of the installed console
script, against a real ``twistd queuey`` over a socket; exit codes, tables and ``--json``, posting lines
in batches, errors naming lines, ``check-config`` and ``serve`` reporting the same problems, completion.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

import orjson
import treq
from twisted.internet import defer
from twisted.trial.unittest import TestCase

from queuey.cli.running import ExitCode
from tests.processes import free_port, spawn_command, start_queuey, wait_for

BIN = os.path.dirname(sys.executable)
QUEUEY = os.path.join(BIN, "queuey")
OWNER, OWNER_KEY = "shop", "shop-key-1234"
READER, READER_KEY = "reader", "reader-key-5678"
SERVER_CONFIG = f"""\
[application_keys]
{OWNER} = {OWNER_KEY}
{READER} = {READER_KEY}

[storage]
backend = sqlite
path = {{directory}}/queuey.sqlite

[limits]
max_message_bytes = 1000
max_response_bytes = 1000000
"""
BAD_CONFIG = """\
[application_keys]
shop = ${NO_SUCH_VARIABLE}

[storage]
backend = sqlite
readers = none

[delays]
strong = soon

[limits]
max_mesage_bytes = 5
"""
BAD_PROBLEMS = ["[application_keys] shop: environment variable NO_SUCH_VARIABLE is not set",
                "[storage] path: missing (required)",
                "[storage] readers: 'none' is not a whole number",
                "[delays] strong: 'soon' is not a number"]


class Result:
    def __init__(self, code: int, out: bytes, err: bytes) -> None:
        self.code, self.out, self.err = code, out.decode(), err.decode()

    def json(self) -> Any:
        return orjson.loads(self.out)

    def json_lines(self) -> list[Any]:
        return [orjson.loads(line) for line in self.out.splitlines()]

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


class CommandCase(TestCase):
    timeout = 600  # a deadline, not a wait: each test runs the command a dozen times, slow on a loaded machine

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.env = {"QUEUEY_URL": "", "QUEUEY_APP": "", "QUEUEY_KEY": "", "COLUMNS": "120"}

    def write(self, name: str, text: str | bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as handle:
            handle.write(text.encode() if isinstance(text, str) else text)
        return path

    async def queuey(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
                     expect: ExitCode | None = ExitCode.OK) -> Result:
        """``queuey ARGS`` to its end; its exit code checked against ``expect`` (None: not checked)."""
        process = spawn_command(self, [QUEUEY, *args], env={**self.env, **(env or {})}, stdin=stdin,
                                cwd=self.directory)
        result = Result(await process.ended, process.out, process.err)
        if expect is not None:
            self.assertEqual(result.code, int(expect), result)
        self.assertNotIn("Traceback", result.err, result)
        return result


class ServerCase(CommandCase):
    """Commands against a real twistd queuey on SQLite, as the application ``shop`` by default."""

    def setUp(self) -> defer.Deferred[None]:
        super().setUp()
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        config = self.write("queuey.ini", SERVER_CONFIG.format(directory=self.directory))
        self.server = await start_queuey(self, config)
        self.env.update({"QUEUEY_URL": self.server.base, "QUEUEY_APP": OWNER, "QUEUEY_KEY": OWNER_KEY})

    def run_test(self, coroutine: Any) -> defer.Deferred[None]:
        return defer.ensureDeferred(coroutine)


class QueueCommandTests(ServerCase):

    async def _lifecycle(self) -> None:
        created = (await self.queuey("queues", "create", "jobs", "--partitions", "2", "--json")).json()
        self.assertEqual((created["queue_name"], created["partitions"], created["type"]), ("jobs", 2, "user"))
        again = await self.queuey("queues", "create", "jobs", expect=ExitCode.CONFLICT)
        self.assertIn("409 QueueExists:", again.err)
        await self.queuey("queues", "create", "pub", "--type", "public", "--principles", "")
        listed = (await self.queuey("queues", "list", "--count", "--json")).json()
        self.assertEqual([(q["queue_name"], q["partitions"], q["count"]) for q in listed["queues"]],
                         [("jobs", 2, 0), ("pub", 1, 0)])
        table = (await self.queuey("queues", "list")).out
        self.assertIn("jobs", table)
        self.assertIn("public", table)
        updated = (await self.queuey("queues", "update", "jobs", "--partitions", "4", "--principals",
                                     f"app:{READER}", "--json")).json()
        self.assertEqual((updated["partitions"], updated["principles"]), (4, [f"app:{READER}"]))
        await self.queuey("queues", "update", "jobs", expect=ExitCode.USAGE)  # nothing to change
        shrink = await self.queuey("queues", "update", "jobs", "--partitions", "1", expect=ExitCode.REFUSED)
        self.assertIn("partitions: Partitions may only grow", shrink.err)
        # The reader's view: the listed principal with its own key; the owner no longer reads it.
        info = (await self.queuey("queues", "info", "jobs", "--json", env={"QUEUEY_KEY": READER_KEY})).json()
        self.assertEqual(info, {"status": "ok", "queue_name": "jobs", "partitions": 4, "type": "user",
                                "consistency": "strong"})
        await self.queuey("queues", "info", "jobs", expect=ExitCode.NOT_ALLOWED)
        shown = (await self.queuey("queues", "info", "pub", env={"QUEUEY_KEY": ""})).out
        self.assertIn("public", shown)  # no key needed for a public queue
        refused = await self.queuey("queues", "delete", "jobs", expect=ExitCode.USAGE)  # no terminal to ask on
        self.assertIn("without --yes", refused.err)
        await self.queuey("queues", "delete", "jobs", "--yes")
        gone = await self.queuey("queues", "info", "jobs", env={"QUEUEY_KEY": READER_KEY},
                                 expect=ExitCode.NOT_FOUND)
        self.assertIn("404 NotFound: No queue 'jobs'", gone.err)

    def test_queue_lifecycle(self) -> defer.Deferred[None]:
        return self.run_test(self._lifecycle())


class ListingTests(ServerCase):
    """``queues list`` walks every page and prints each as it comes (memory bounded by a page)."""

    application, key = OWNER, OWNER_KEY
    other, other_key = READER, READER_KEY  # an application without queues

    async def _in_pages(self) -> None:
        names = [f"q{i:02d}" for i in (7, 3, 11, 0, 5)]
        for name in names:
            response = await treq.post(f"{self.server.base}/v1/{self.application}", json={"queue_name": name},
                                       headers={"Authorization": [f"Application {self.key}"]}, persistent=False)
            self.assertEqual(response.code, 201, await response.text())
        listed = (await self.queuey("queues", "list", "--page-size", "2", "--json")).json()
        self.assertEqual([q["queue_name"] for q in listed["queues"]], sorted(names))
        self.assertEqual(listed["queues"][0]["partitions"], 1)
        table = await self.queuey("queues", "list", "--page-size", "2")
        self.assertEqual(re.findall(r"\bq\d\d\b", table.out), sorted(names))
        self.assertEqual(table.out.count("queue"), 1)  # one header, over every page
        self.assertIn(f"5 queues in {self.application}", table.err)
        nothing = await self.queuey("queues", "list", "--json",
                                    env={"QUEUEY_APP": self.other, "QUEUEY_KEY": self.other_key})
        self.assertEqual(nothing.json(), {"queues": []})

    def test_every_page_in_order(self) -> defer.Deferred[None]:
        return self.run_test(self._in_pages())


class CassandraListingTests(ListingTests):
    """The same on Cassandra: pages merged from the queue directory's shards (an application of its own)."""

    async def _start(self) -> None:
        from tests.services import CASSANDRA, require
        hosts = require(CASSANDRA, "Cassandra")
        self.application, self.key = f"cli{os.urandom(4).hex()}", "cli-key-1234"
        self.other = self.application + "e"
        config = self.write("queuey.ini", f"[application_keys]\n{self.application} = {self.key}\n"
                                          f"{self.other} = {self.other_key}\n[storage]\nbackend = cassandra\n"
                                          f"hosts = {hosts}\nkeyspace = queuey_test\n")
        self.server = await start_queuey(self, config)
        self.env.update({"QUEUEY_URL": self.server.base, "QUEUEY_APP": self.application,
                         "QUEUEY_KEY": self.key})


class MessageCommandTests(ServerCase):

    async def _post_and_read(self) -> None:
        await self.queuey("queues", "create", "q", "--partitions", "3")
        one = await self.queuey("post", "q", "hello [world]", "--partition", "2")
        key = one.out.split()[0]
        self.assertEqual(len(key), 32)
        self.assertIn("partition 2", one.out)
        lines = [f"line {n} ünïcode" if n % 7 else "" for n in range(1, 501)]  # every 7th empty: skipped
        posted = await self.queuey("post", "q", "--batch-size", "40", "--json", "--partition", "1",
                                   stdin=("\r\n".join(lines) + "\n").encode())
        stored = posted.json_lines()
        wanted = [(n, text) for n, text in enumerate(lines, start=1) if text]
        self.assertEqual([s["line"] for s in stored], [n for n, _ in wanted])
        self.assertEqual({s["partition"] for s in stored}, {1})
        page = (await self.queuey("read", "q", "--partitions", "1", "--limit", "1000", "--json")).json()
        self.assertEqual([m["body"] for m in page["messages"]], [text for _, text in wanted])
        self.assertEqual([m["message_id"] for m in page["messages"]], [s["key"] for s in stored])
        table = (await self.queuey("read", "q", "-p", "2")).out
        self.assertIn("hello [world]", table)  # shown as it is, not taken for markup
        self.assertIn(key, table)
        after = (await self.queuey("read", "q", "-p", "1", "--after", stored[-2]["key"], "--json")).json()
        self.assertEqual([m["body"] for m in after["messages"]], [wanted[-1][1]])
        found = (await self.queuey("get", "q", f"2:{key}", f"1:{stored[0]['key']}", "--json")).json()
        self.assertEqual([m["body"] for m in found["messages"]], ["hello [world]", "line 1 ünïcode"])
        missing = await self.queuey("get", "q", f"2:{key}", f"3:{key}", "--json", expect=ExitCode.NOT_FOUND)
        self.assertEqual(len(missing.json()["messages"]), 1)
        self.assertIn(f"not found: 3:{key}", missing.err)
        await self.queuey("delete", "q", f"2:{key}")
        await self.queuey("get", "q", f"2:{key}", expect=ExitCode.NOT_FOUND)

    def test_post_lines_and_read_them_back(self) -> defer.Deferred[None]:
        return self.run_test(self._post_and_read())

    async def _errors_name_lines(self) -> None:
        await self.queuey("queues", "create", "q")
        lines = [f"m{n}" for n in range(1, 301)]
        lines[149] = "x" * 2000  # over max_message_bytes: the batch of lines 101-200 is refused
        failed = await self.queuey("post", "q", "--batch-size", "100", "--file", self.write("in.txt", "\n".join(lines)),
                                   expect=ExitCode.REFUSED)
        self.assertIn("lines 101-200 not posted: 413 line 150: body:", failed.err)
        self.assertIn("lines up to 100 were posted (100 messages)", failed.err)
        page = (await self.queuey("read", "q", "--limit", "1000", "--json")).json()
        self.assertEqual(len(page["messages"]), 100)
        binary = await self.queuey("post", "q", stdin=b"fine\n\xff\xfe\nnever\n", expect=ExitCode.REFUSED)
        self.assertIn("line 2 is not UTF-8 text", binary.err)
        self.assertIn("lines up to 1 were posted (1 messages)", binary.err)
        whole = await self.queuey("post", "q", "--file", self.write("blob", b"\xff\xfe\x00 any bytes"), "--whole",
                                  "--content-type", "application/octet-stream", "--json")
        message = (await self.queuey("get", "q", whole.json_lines()[0]["key"], "--json")).json()["messages"][0]
        self.assertEqual((message["body_encoding"], message["content_type"]), ("base64", "application/octet-stream"))

    def test_post_errors_name_the_line(self) -> defer.Deferred[None]:
        return self.run_test(self._errors_name_lines())

    async def _progress(self) -> None:
        await self.queuey("queues", "create", "q", "--partitions", "4")
        source = self.write("many.txt", "".join(f"message {n}\n" for n in range(3000)))
        posted = await self.queuey("post", "q", "--file", source, "--progress", "--batch-size", "500")
        self.assertIn("posting", posted.err)
        self.assertIn("3000 messages", posted.err)
        self.assertIn("posted 3000 messages to q", posted.err)
        listed = (await self.queuey("queues", "list", "--count", "--json")).json()
        self.assertEqual(listed["queues"][0]["count"], 3000)

    def test_post_a_file_with_a_progress_bar(self) -> defer.Deferred[None]:
        return self.run_test(self._progress())

    async def _interrupted(self) -> None:
        """Lines from a pipe that stays open: each batch is sent as it fills; Ctrl-C stops at once
        (the reader blocked on the pipe does not hold the process) and says what was posted."""
        await self.queuey("queues", "create", "q")
        poster = spawn_command(self, [QUEUEY, "post", "q", "--batch-size", "2", "--json"], env=self.env,
                               stdin=b"a\nb\nc\nd\ne\n", close_stdin=False, cwd=self.directory)
        await wait_for(lambda: poster.out.count(b"\n") >= 4, 60, "two batches posted")
        poster.transport.signalProcess(signal.SIGINT)
        self.assertEqual(await poster.ended, int(ExitCode.INTERRUPTED))
        self.assertIn(b"stopped: lines up to 4 were posted (4 messages)", poster.err)
        page = (await self.queuey("read", "q", "--json")).json()
        self.assertEqual([m["body"] for m in page["messages"]], ["a", "b", "c", "d"])

    def test_post_from_a_pipe_interrupted(self) -> defer.Deferred[None]:
        return self.run_test(self._interrupted())


class ExitCodeTests(ServerCase):

    async def _codes(self) -> None:
        await self.queuey("queues", "create", "q", "--partitions", "2")
        await self.queuey("queues", "create", "pub", "--type", "public")
        await self.queuey("post", "pub", "for everyone")
        wrong = await self.queuey("read", "q", env={"QUEUEY_KEY": "not-a-key"}, expect=ExitCode.NOT_ALLOWED)
        self.assertIn("401 InvalidApplicationKey:", wrong.err)
        await self.queuey("read", "q", env={"QUEUEY_KEY": READER_KEY}, expect=ExitCode.NOT_ALLOWED)  # 403
        await self.queuey("read", "q", env={"QUEUEY_KEY": ""}, expect=ExitCode.NOT_ALLOWED)  # 401, no key
        public = await self.queuey("read", "pub", "--json", env={"QUEUEY_KEY": ""})
        self.assertEqual([m["body"] for m in public.json()["messages"]], ["for everyone"])
        await self.queuey("read", "nope", expect=ExitCode.NOT_FOUND)
        await self.queuey("queues", "list", env={"QUEUEY_APP": "nobody"}, expect=ExitCode.NOT_FOUND)
        bad = await self.queuey("post", "q", "x", "--partition", "3", expect=ExitCode.REFUSED)
        self.assertIn("400 partition:", bad.err)
        no_app = await self.queuey("read", "q", env={"QUEUEY_APP": ""}, expect=ExitCode.USAGE)
        self.assertIn("name the application", no_app.err)
        from_url = await self.queuey("read", "pub", "--json", env={"QUEUEY_APP": "", "QUEUEY_URL":
                                                                  f"{self.server.base}/v1/{OWNER}"})
        self.assertEqual(len(from_url.json()["messages"]), 1)
        await self.queuey("read", "q", "--limit", "0", expect=ExitCode.USAGE)  # checked before sending
        await self.queuey("no-such-command", expect=ExitCode.USAGE)
        nobody = await self.queuey("read", "q", "--retries", "1", env={"QUEUEY_URL": f"http://127.0.0.1:{free_port()}"},
                                   expect=ExitCode.UNAVAILABLE)
        self.assertIn("no answer:", nobody.err)

    def test_exit_codes(self) -> defer.Deferred[None]:
        return self.run_test(self._codes())


class CompletionTests(ServerCase):

    async def complete(self, words: str, **env: str) -> list[str]:
        result = await self.queuey(env={"_QUEUEY_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
                                        **env})
        return [line.split(",", 1)[1] for line in result.out.splitlines() if line]

    async def _completion(self) -> None:
        for shell, marker in (("bash", "_QUEUEY_COMPLETE=bash_complete"), ("zsh", "compdef"),
                              ("fish", "complete --no-files --command queuey")):
            script = (await self.queuey("completion", shell)).out
            self.assertIn(marker, script)
        self.assertEqual(await self.complete("queuey qu"), ["queues"])
        self.assertEqual(set(await self.complete("queuey queues ")), {"list", "create", "info", "update", "delete"})
        self.assertEqual(await self.complete("queuey queues create --type "), ["user", "public"])
        self.assertIn("--after", await self.complete("queuey read q --"))
        for name in ("greetings", "grades", "other"):
            await self.queuey("queues", "create", name)
        self.assertEqual(sorted(await self.complete("queuey read gr")), ["grades", "greetings"])
        self.assertEqual(await self.complete("queuey read gr", QUEUEY_KEY="wrong"), [])  # quietly nothing

    def test_shell_completion(self) -> defer.Deferred[None]:
        return self.run_test(self._completion())


class CheckConfigTests(CommandCase):

    async def _good(self) -> None:
        path = self.write("good.ini", SERVER_CONFIG.format(directory="/srv/queuey") + "[longpol]\npoll_interval = 2\n")
        shown = await self.queuey("check-config", path)
        self.assertTrue(shown.out.startswith(f"{path}: ok\n"), shown)
        self.assertIn("shop (1 key)", shown.out)
        self.assertIn("path /srv/queuey/queuey.sqlite", shown.out)
        self.assertIn("max_message_bytes = 1000\n", shown.out)
        self.assertIn("warning: [longpol] poll_interval: unknown setting, ignored", shown.err)
        document = (await self.queuey("check-config", path, "--json")).json()
        self.assertEqual((document["ok"], document["summary"]["storage"]["backend"]), (True, "sqlite"))
        self.assertEqual(document["warnings"], ["[longpol] poll_interval: unknown setting, ignored"])
        for output in (shown.out, shown.err, str(document)):
            self.assertNotIn(OWNER_KEY, output)  # keys are never shown
        cassandra = self.write("cassandra.ini", "[application_keys]\na = k\n[storage]\nbackend = cassandra\n"
                                                "password = hunter22\nusername = q\n")
        shown = await self.queuey("check-config", cassandra)
        self.assertIn("hosts 127.0.0.1:9042,", shown.out)
        self.assertNotIn("hunter22", shown.out)

    def test_a_good_file_is_ok_with_a_summary(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._good())

    async def _bad(self) -> None:
        path = self.write("bad.ini", BAD_CONFIG)
        checked = await self.queuey("check-config", path, expect=ExitCode.USAGE)
        self.assertEqual(checked.err.splitlines(), [f"queuey check-config: bad configuration: {p}" for p in BAD_PROBLEMS])
        document = (await self.queuey("check-config", path, "--json", expect=ExitCode.USAGE)).json()
        self.assertEqual(document, {"ok": False, "errors": BAD_PROBLEMS})
        served = await self.queuey("serve", "--config", path, expect=ExitCode.USAGE)
        self.assertEqual(served.err.splitlines(), [f"queuey serve: bad configuration: {p}" for p in BAD_PROBLEMS])
        missing = await self.queuey("check-config", os.path.join(self.directory, "none.ini"), expect=ExitCode.USAGE)
        self.assertIn("cannot read configuration file", missing.err)
        twistd = spawn_command(self, [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "queuey", "--config", path],
                               cwd=self.directory)
        self.assertEqual(await twistd.ended, 2)
        self.assertEqual(twistd.err.decode().splitlines(),
                         [f"twistd queuey: bad configuration: {p}" for p in BAD_PROBLEMS])

    def test_every_problem_at_once_the_same_in_serve_and_twistd(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._bad())


class ServeTests(CommandCase):

    async def serves(self, *args: str, workers: int = 1) -> None:
        """``queuey serve ARGS`` answers on its port (from each of its ``workers``) until SIGTERM,
        then shuts down cleanly."""
        port = free_port()
        config = self.write("queuey.ini", SERVER_CONFIG.format(directory=self.directory))
        process = spawn_command(self, [QUEUEY, "serve", "--config", config, *[a.format(port=port) for a in args]],
                                cwd=self.directory)

        async def heartbeat() -> bool:
            response = await treq.get(f"http://127.0.0.1:{port}/__heartbeat__", persistent=False)
            await response.content()
            return response.code == 200
        await wait_for(heartbeat, 60, "queuey serve to answer")
        seen: set[int] = set()

        async def every_worker() -> bool:
            response = await treq.get(f"http://127.0.0.1:{port}/__version__", persistent=False)
            seen.add((await response.json())["worker"])
            return seen == set(range(workers))
        await wait_for(every_worker, 60, f"each of the {workers} workers to answer")
        process.transport.signalProcess(signal.SIGTERM)
        await process.ended
        self.assertIn(b"Server Shut Down.", process.out)
        self.assertNotIn(b"Traceback", process.out + process.err)

    def test_serve_is_twistd_queuey(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.serves("--port", "tcp:{port}:interface=127.0.0.1"))

    def test_further_options_go_to_twistd_queuey(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.serves("--", "--port=tcp:{port}:interface=127.0.0.1"))

    def test_workers_go_to_twistd_queuey(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self.serves("--workers", "2", "--port", "tcp:{port}:interface=127.0.0.1",
                                                workers=2))

    async def _unknown(self) -> None:
        refused = await self.queuey("serve", "--bogus", "3", expect=ExitCode.USAGE)
        self.assertIn("bogus", refused.err)
        port = await self.queuey("serve", "--port", "nonsense:1", expect=ExitCode.USAGE)
        self.assertIn("--port 'nonsense:1' is not an endpoint string", port.out + port.err)

    def test_unknown_server_options_are_usage_errors(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._unknown())


class TailTests(ServerCase):
    """``queuey tail`` on the server's event stream (queuey/streams.py)."""

    def follow(self, *args: str) -> Any:
        return spawn_command(self, [QUEUEY, "tail", "q", "--partitions", "all", "--json", *args], env=self.env,
                             cwd=self.directory)

    async def post(self, *bodies: str) -> list[str]:
        keys = []
        for n, body in enumerate(bodies):
            keys.append((await self.queuey("post", "q", body, "--partition", str(n % 2 + 1))).out.split()[0])
        return keys

    async def lines(self, process: Any, count: int) -> list[Any]:
        await wait_for(lambda: process.out.count(b"\n") >= count or process.ended.called, 60, f"{count} messages")
        return [orjson.loads(line) for line in process.out.splitlines()]

    async def _follows(self) -> None:
        await self.queuey("queues", "create", "q", "--partitions", "2")
        first = await self.post("a", "b", "c")
        taken = (await self.queuey("tail", "q", "-p", "all", "--count", "3", "--json")).json_lines()
        self.assertEqual(sorted(m["message_id"] for m in taken), sorted(first))
        cursor = taken[-1]["cursor"]
        self.assertEqual(sorted(part.split(":")[0] for part in cursor.split(",")), ["1", "2"])
        # Resumed from the cursor: only what came after it, live.
        follower = self.follow("--after", cursor)
        later = await self.post("d", "e")
        seen = await self.lines(follower, 2)
        self.assertEqual([m["message_id"] for m in seen], later)
        follower.transport.signalProcess(signal.SIGINT)
        self.assertEqual(await follower.ended, int(ExitCode.INTERRUPTED))
        self.assertIn(f"resume with: queuey tail q --after {seen[-1]['cursor']}", follower.err.decode())
        # Across a server restart: the stream is cut, tail reconnects where it stopped.
        follower = self.follow("--after", seen[-1]["cursor"], "--count", "3")
        before = await self.post("f")
        await self.lines(follower, 1)
        self.server.transport.signalProcess(signal.SIGTERM)
        await self.server.ended
        port = int(self.server.base.rsplit(":", 1)[1])
        self.server = await start_queuey(self, os.path.join(self.directory, "queuey.ini"), port)
        after = await self.post("g", "h")
        self.assertEqual(await follower.ended, 0, follower.err)
        got = [orjson.loads(line)["message_id"] for line in follower.out.splitlines()]
        self.assertEqual(got, before + after)
        self.assertIn(b"reconnecting", follower.err)

    def test_tail_follows_resumes_and_reconnects(self) -> defer.Deferred[None]:
        return self.run_test(self._follows())
