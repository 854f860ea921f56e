"""The ini configuration: every key, ${VAR}, and one clear line for each mistake."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from queuey.config import (CassandraSettings, Config, ConfigError, SQLiteSettings, Synchronous, load_config,
                           parse_config)
from queuey.storage import make_store

GOOD = """
[application_keys]
# application name = one key, or several separated by commas (rotation)
queuey = f25bfb8fe200475c8a0532a9cbe7651e
notifications = key-one, key-two

[storage]
backend = sqlite
path = var/queuey.sqlite

[delays]
weak = 0
strong = 0.5
very_strong = 0

[limits]
max_message_bytes = 262144
"""


class ConfigTests(unittest.TestCase):
    def test_good(self) -> None:
        config = parse_config(GOOD)
        self.assertEqual(dict(config.application_keys), {
            "queuey": ("f25bfb8fe200475c8a0532a9cbe7651e",), "notifications": ("key-one", "key-two")})
        self.assertEqual((config.backend, config.storage.path), ("sqlite", "var/queuey.sqlite"))
        self.assertEqual(dict(config.delays), {"weak": 0.0, "strong": 0.5, "very_strong": 0.0})
        self.assertEqual(config.max_message_bytes, 262144)

    def test_environment_variables(self) -> None:
        text = GOOD.replace("key-one", "${QUEUEY_KEY}").replace("var/queuey", "${DATA}/queuey")
        config = parse_config(text, environ={"QUEUEY_KEY": "from-env", "DATA": "/srv"})
        self.assertEqual(config.application_keys["notifications"], ("from-env", "key-two"))
        self.assertEqual(config.storage.path, "/srv/queuey.sqlite")
        error = self.assertRaises(ConfigError, parse_config, text, environ={"DATA": "x"})
        self.assertEqual(str(error), "[application_keys] notifications: environment variable QUEUEY_KEY is not set")

    def test_mistakes_name_section_and_key(self) -> None:
        cases = [
            (GOOD.replace("backend = sqlite", "backend = mongo"), "[storage] backend: 'mongo': use one of sqlite, cassandra"),
            (GOOD.replace("path = var/queuey.sqlite", ""), "[storage] path: missing"),
            (GOOD.replace("strong = 0.5", "strong = soon"), "[delays] strong: 'soon' is not a number"),
            (GOOD.replace("strong = 0.5", "strong = -1"), "[delays] strong: must be at least"),
            (GOOD.replace("262144", "lots"), "[limits] max_message_bytes: 'lots' is not a whole number"),
            (GOOD.replace("key-one, key-two", " , "), "[application_keys] notifications: no key given"),
            (GOOD.replace("[application_keys]", "[keys]"), "[application_keys]: missing section"),
            (GOOD.replace("notifications =", "bad name ="), "[application_keys] bad name:"),
            (GOOD + "[storage]\n", "section 'storage' already exists"),
        ]
        for text, expected in cases:
            error = self.assertRaises(ConfigError, parse_config, text)
            self.assertIn(expected, str(error))
            self.assertEqual(len(str(error).splitlines()), 1)

    def test_every_mistake_at_once(self) -> None:
        text = (GOOD.replace("strong = 0.5", "strong = soon").replace("262144", "lots")
                .replace("key-one, key-two", "${NOPE}").replace("path = var/queuey.sqlite", "readers = 0"))
        error = self.assertRaises(ConfigError, parse_config, text, environ={})
        self.assertEqual(error.problems, (
            "[application_keys] notifications: environment variable NOPE is not set",
            "[storage] path: missing (required)",
            "[storage] readers: must be at least 1, not 0",
            "[delays] strong: 'soon' is not a number",
            "[limits] max_message_bytes: 'lots' is not a whole number"))
        self.assertEqual(str(error).splitlines(), list(error.problems))

    def test_queue_cache_seconds_for_either_backend(self) -> None:
        self.assertEqual(parse_config(GOOD).queue_cache_seconds, 1.0)
        cached = GOOD.replace("path = var/queuey.sqlite", "path = var/queuey.sqlite\nqueue_cache_seconds = 0")
        self.assertEqual(parse_config(cached).queue_cache_seconds, 0.0)
        self.assertEqual(parse_config(cached).warnings, ())
        error = self.assertRaises(ConfigError, parse_config, cached.replace(
            "queue_cache_seconds = 0", "queue_cache_seconds = -1").replace("262144", "lots"))
        self.assertEqual(error.problems, ("[limits] max_message_bytes: 'lots' is not a whole number",
                                          "[storage] queue_cache_seconds: must be at least 0, not -1"))

    def test_unknown_settings_are_warnings(self) -> None:
        config = parse_config(GOOD + "max_mesage_bytes = 5\n[longpol]\npoll_interval = 2\n")
        self.assertEqual(config.warnings, ("[limits] max_mesage_bytes: unknown setting, ignored",
                                           "[longpol] poll_interval: unknown setting, ignored"))
        self.assertEqual(parse_config(GOOD).warnings, ())

    def test_unreadable_file(self) -> None:
        error = self.assertRaises(ConfigError, load_config, "/no/such/queuey.ini")
        self.assertEqual(str(error), "cannot read configuration file /no/such/queuey.ini: No such file or directory")

    def test_sample_configs_load(self) -> None:
        samples = sorted((Path(__file__).parent.parent / "etc").glob("queuey*.ini"))
        self.assertEqual([p.name for p in samples], ["queuey-cassandra.ini", "queuey.ini"])
        for path in samples:
            config = load_config(str(path), environ={})
            self.assertTrue(config.application_keys)
            self.assertEqual(config.warnings, (), path)

    def test_sample_configs_say_what_they_mean(self) -> None:
        """etc/*.ini spell out every default, as their comments and README.rst say, and build their store."""
        etc = Path(__file__).parent.parent / "etc"
        keys = {"queuey": ("f25bfb8fe200475c8a0532a9cbe7651e",), "notifications": ("key-one", "key-two")}
        for name, storage in [("queuey.ini", SQLiteSettings("var/queuey.sqlite")),
                              ("queuey-cassandra.ini", CassandraSettings())]:
            config = load_config(str(etc / name), environ={})
            self.assertEqual(config, Config(application_keys=keys, storage=storage, source=config.source), name)
            store = make_store(config, reactor)  # builds (opens nothing)
            self.assertEqual(store.name, storage.backend)

    def test_defaults_of_a_minimal_file(self) -> None:
        """Only [application_keys] and a path: every other key takes the default README.rst gives."""
        config = parse_config("[application_keys]\na = k\n[storage]\npath = q.sqlite\n")
        self.assertEqual(config.storage, SQLiteSettings("q.sqlite", Synchronous.FULL, 4, 60.0))
        self.assertEqual((dict(config.delays), config.max_message_bytes, config.max_request_bytes,
                          config.poll_interval, config.max_delay),
                         ({"weak": 0.0, "strong": 0.0, "very_strong": 0.0}, 262144, 16777216, 1.0, 604800))


class StreamSigningCorsConfigTests(unittest.TestCase):
    """[streams], [cors], [signing] and [limits] max_delay: their defaults, and each mistake in one line."""

    def test_defaults(self) -> None:
        config = parse_config(GOOD)
        self.assertEqual((config.stream_keepalive, config.stream_buffer_bytes, config.stream_retry_ms),
                         (15.0, 1024 * 1024, 2000))
        self.assertEqual((config.cors_allow_origins, config.signing_secrets, config.max_delay), ((), (), 604800))

    def test_values(self) -> None:
        config = parse_config(GOOD + """max_delay = 60
[streams]
keepalive = 2.5
buffer_bytes = 65536
retry = 500
[cors]
allow_origins = https://a.example, http://b.example:8080 http://[::1]:9000
[signing]
secret = new-secret-0123456789, old-secret-0123456789
max_expiry = 600
""")
        self.assertEqual((config.stream_keepalive, config.stream_buffer_bytes, config.stream_retry_ms),
                         (2.5, 65536, 500))
        self.assertEqual(config.cors_allow_origins, ("https://a.example", "http://b.example:8080", "http://[::1]:9000"))
        self.assertEqual(config.signing_secrets, (b"new-secret-0123456789", b"old-secret-0123456789"))
        self.assertEqual((config.signing_max_expiry, config.max_delay), (600, 60))

    def test_mistakes(self) -> None:
        for section, line, expected in [
            ("cors", "allow_origins = https://a.example/", "[cors] allow_origins: 'https://a.example/' is not an origin"),
            ("cors", "allow_origins = *, https://a.example", "[cors] allow_origins: * allows every origin"),
            ("signing", "secret = short", "[signing] secret: each secret must be at least 16 bytes"),
            ("streams", "buffer_bytes = 10", "[streams] buffer_bytes: must be at least 1024"),
            ("streams", "keepalive = often", "[streams] keepalive: 'often' is not a number"),
        ]:
            error = self.assertRaises(ConfigError, parse_config, GOOD + f"[{section}]\n{line}\n")
            self.assertTrue(str(error).startswith(expected), str(error))
        error = self.assertRaises(ConfigError, parse_config, GOOD + "max_delay = 400000000\n")
        self.assertTrue(str(error).startswith("[limits] max_delay: must be at most"), str(error))
