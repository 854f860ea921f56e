"""The ini configuration: every key, ${VAR}, and one clear line for each mistake."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.trial import unittest

from queuey.config import Config, ConfigError, load_config, parse_config
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
        self.assertEqual((config.backend, config.storage["path"]), ("sqlite", "var/queuey.sqlite"))
        self.assertEqual(dict(config.delays), {"weak": 0.0, "strong": 0.5, "very_strong": 0.0})
        self.assertEqual(config.max_message_bytes, 262144)

    def test_environment_variables(self) -> None:
        text = GOOD.replace("key-one", "${QUEUEY_KEY}").replace("var/queuey", "${DATA}/queuey")
        config = parse_config(text, environ={"QUEUEY_KEY": "from-env", "DATA": "/srv"})
        self.assertEqual(config.application_keys["notifications"], ("from-env", "key-two"))
        self.assertEqual(config.storage["path"], "/srv/queuey.sqlite")
        error = self.assertRaises(ConfigError, parse_config, text, environ={"DATA": "x"})
        self.assertEqual(str(error), "[application_keys] notifications: environment variable QUEUEY_KEY is not set")

    def test_mistakes_name_section_and_key(self) -> None:
        cases = [
            (GOOD.replace("backend = sqlite", "backend = mongo"), "[storage] backend: unknown backend 'mongo'"),
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

    def test_unreadable_file(self) -> None:
        error = self.assertRaises(ConfigError, load_config, "/no/such/queuey.ini")
        self.assertEqual(str(error), "cannot read configuration file /no/such/queuey.ini: No such file or directory")

    def test_sample_configs_load(self) -> None:
        samples = sorted((Path(__file__).parent.parent / "etc").glob("queuey*.ini"))
        self.assertEqual([p.name for p in samples], ["queuey-cassandra.ini", "queuey.ini"])
        for path in samples:
            config = load_config(str(path), environ={})
            self.assertTrue(config.application_keys)

    def test_sample_configs_say_what_they_mean(self) -> None:
        """etc/*.ini hold the values their comments and README.rst document, and build their store."""
        etc = Path(__file__).parent.parent / "etc"
        for name, backend, storage in [
                ("queuey.ini", "sqlite", {"backend": "sqlite", "path": "var/queuey.sqlite", "synchronous": "FULL",
                                          "readers": "4", "expiry_interval": "60"}),
                ("queuey-cassandra.ini", "cassandra", {
                    "backend": "cassandra", "hosts": "127.0.0.1:9042", "keyspace": "queuey",
                    "replication": "SimpleStrategy:1", "multi_dc": "false", "create_schema": "true",
                    "connect_timeout": "5", "request_timeout": "10", "max_in_flight": "256",
                    "bucket_seconds": "3600"})]:
            config = load_config(str(etc / name), environ={})
            self.assertEqual(dict(config.application_keys), {
                "queuey": ("f25bfb8fe200475c8a0532a9cbe7651e",), "notifications": ("key-one", "key-two")}, name)
            self.assertEqual((config.backend, dict(config.storage)), (backend, storage), name)
            defaults = Config(application_keys=config.application_keys)
            self.assertEqual((dict(config.delays), config.max_message_bytes, config.max_request_bytes,
                              config.poll_interval, config.expiry_interval),
                             (dict(defaults.delays), 262144, 16 * 1024 * 1024, 1.0, 60.0), name)
            self.assertEqual((defaults.max_message_bytes, defaults.max_request_bytes, defaults.poll_interval,
                              defaults.expiry_interval), (262144, 16 * 1024 * 1024, 1.0, 60.0))
            store = make_store(config, reactor)  # builds (opens nothing)
            self.assertEqual(store.name, backend)

    def test_defaults_of_a_minimal_file(self) -> None:
        """Only [application_keys] and a path: every other key takes the default README.rst gives."""
        config = parse_config("[application_keys]\na = k\n[storage]\npath = q.sqlite\n")
        self.assertEqual((config.backend, dict(config.delays), config.max_message_bytes, config.max_request_bytes,
                          config.poll_interval, config.expiry_interval),
                         ("sqlite", {"weak": 0.0, "strong": 0.0, "very_strong": 0.0}, 262144, 16777216, 1.0, 60.0))
