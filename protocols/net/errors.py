"""The transport's failures, all :class:`secureml.errors.ProtocolError` subclasses (one line each)."""
from __future__ import annotations

from secureml.errors import ProtocolError

__all__ = ["PeerDisconnected", "FrameTooLarge", "MalformedMessage", "ProtocolTimeout", "ConnectFailed"]


class PeerDisconnected(ProtocolError):
    """The other party closed the connection (or this channel was closed)."""


class FrameTooLarge(ProtocolError):
    """A frame or message is larger than the configured limit."""


class MalformedMessage(ProtocolError):
    """A message does not have the expected structure, dtype or shape."""


class ProtocolTimeout(ProtocolError):
    """The peer did not send (or accept) data within the channel's timeout."""


class ConnectFailed(ProtocolError):
    """No connection could be made to the peer."""
