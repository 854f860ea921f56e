"""Makes ``twistd qdo --config PATH`` run a qdo worker."""

from twisted.application.service import ServiceMaker

qdo = ServiceMaker("qdo", "qdo.tap", "A qdo worker for Queuey's partitioned queues.", "qdo")
