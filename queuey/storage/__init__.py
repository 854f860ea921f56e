"""Storage backends; :func:`make_store` picks one from the configuration."""

from __future__ import annotations

from typing import Any

from queuey.config import Config, ConfigError
from queuey.interfaces import IMessageStore


def make_store(config: Config, reactor: Any) -> IMessageStore:
    """Build the configured backend.  Backend modules are imported only when used."""
    if config.backend == "sqlite":
        from queuey.storage.sqlite import SQLiteStore
        return SQLiteStore.from_config(config, reactor)
    if config.backend == "cassandra":
        try:
            from queuey.storage.cassandra import CassandraStore
        except ImportError as e:
            raise ConfigError(f"[storage] backend: cassandra needs the cassandra extra "
                              f"(pip install 'queuey[cassandra]'): {e}") from None
        return CassandraStore.from_config(config, reactor)
    raise ConfigError(f"[storage] backend: unknown backend {config.backend!r}")
