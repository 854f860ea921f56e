"""Makes ``twistd queuey`` run the Queuey service."""

from twisted.application.service import ServiceMaker

queuey = ServiceMaker("Queuey", "queuey.tap", "The Queuey HTTP message store.", "queuey")
