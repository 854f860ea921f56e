"""qdo: workers that share Queuey's partitioned queues (see its own issue)."""
