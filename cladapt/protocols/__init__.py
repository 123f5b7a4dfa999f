"""How a stream is consumed and scored: ``continual``, ``test_time`` and ``uda``."""

from cladapt.protocols.base import ProtocolResult
from cladapt.protocols.continual import ContinualProtocol
from cladapt.protocols.test_time import TestTimeProtocol
from cladapt.protocols.uda import UDAProtocol

PROTOCOLS = {p.name: p for p in (ContinualProtocol, TestTimeProtocol, UDAProtocol)}

__all__ = ["PROTOCOLS", "ProtocolResult"]
