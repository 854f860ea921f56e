"""Queuey: an HTTP message store for many queues, served by Twisted."""

__version__ = "1.0.0.dev0"
