"""queuey/sse.py reads event streams as EventSource does, however the bytes are cut into chunks."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from queuey.sse import Event, EventParser, StreamError

STREAM = (b"retry: 2000\n\n"
          b": keep-alive\n\n"
          b"id: 1:aa\ndata: {\"body\": \"one\"}\n\n"
          b"data: first line\r\ndata:second line\r\n\r\n"       # no id: the last one goes on
          b"event: other\rid: 1:aa,2:bb\rdata: x\r\r"
          b"id: 2:cc\0\ndata\n\n"                                # an id with NUL is ignored; "data" alone is ""
          b"id\ndata: after an empty id\n\n"
          b"data: no end yet")
EVENTS = [Event('{"body": "one"}', "1:aa"), Event("first line\nsecond line", "1:aa"),
          Event("x", "1:aa,2:bb", "other"), Event("", "1:aa,2:bb"), Event("after an empty id", "")]


def read(chunks: list[bytes]) -> tuple[list[Event], EventParser]:
    parser = EventParser()
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser


class EventParserTests(SynchronousTestCase):

    def test_events_ids_retry_and_comments(self) -> None:
        events, parser = read([STREAM])
        self.assertEqual(events, EVENTS)
        self.assertEqual((parser.retry, parser.comments, parser.last_event_id), (2000, 1, ""))

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.integers(0, len(STREAM)), max_size=20))
    @example([STREAM.index(b"\r\n") + 1] * 2)  # an empty chunk between a CR and its LF
    def test_any_chunking_reads_the_same(self, cuts: list[int]) -> None:
        edges = [0, *sorted(cuts), len(STREAM)]
        events, _ = read([STREAM[a:b] for a, b in zip(edges, edges[1:])])
        self.assertEqual(events, EVENTS)

    def test_bounded_lines(self) -> None:
        parser = EventParser(max_line=100)
        parser.feed(b"data: " + b"x" * 90)
        self.assertRaises(StreamError, parser.feed, b"x" * 20)
        self.assertRaises(StreamError, EventParser().feed, b"data: \xff\n\n")
