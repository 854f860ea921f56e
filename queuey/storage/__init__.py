"""Storage backends; :func:`make_store` builds the one whose settings the configuration holds."""

from __future__ import annotations

from typing import Any

from queuey.config import CassandraSettings, Config, SQLiteSettings
from queuey.interfaces import IMessageStore


def make_store(config: Config, reactor: Any) -> IMessageStore:
    """The backend of ``config.storage`` (checked at load), given its settings.  Backend modules
    are imported only when used."""
    settings = config.storage
    if isinstance(settings, CassandraSettings):
        from queuey.storage.cassandra import CassandraStore
        return CassandraStore(settings, reactor)
    assert isinstance(settings, SQLiteSettings)
    from queuey.storage.sqlite import SQLiteStore
    return SQLiteStore.from_settings(settings, reactor)
