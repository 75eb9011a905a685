"""Client side of the front door: connect, say hello, retry politely, fail with one clear line.

:func:`open_session` performs, for any protocol whose session starts with a JSON hello:

  1. TCP connect within ``connect_timeout`` seconds.
  2. TLS (if a context is given), verifying the server certificate *and its host name*
     (``server_hostname`` overrides the name checked, e.g. when connecting by IP address).
  3. send the hello; the answer must arrive within ``handshake_timeout`` seconds (a deadline:
     a server that is not secureml, or one that trickles bytes, fails in that time, not in 300 s).
  4. a "busy, retry after" answer, a refused connection or a connection closed before any answer
     (a server shedding load) is retried up to ``retries`` (8) times, waiting the longer of the
     server's ``retry_after`` (its queue at its recent session rate) and an exponential backoff
     (0.5, 1, 2, 4, 8, 8 ... s), with jitter, between tries.

Every failure is a :class:`secureml.errors.ProtocolError` (or subclass) with one line saying what
to do: a TLS/plaintext mismatch, an untrusted or wrongly named certificate, a server that does not
speak the protocol, or a refusal with the server's reason.
"""
from __future__ import annotations

import random
import socket
import ssl
import time
from typing import Any

from protocols.net.limits import Deadline
from protocols.net.transport import (ConnectFailed, FrameTooLarge, MalformedMessage, PeerDisconnected,
                                     ProtocolTimeout, TCPChannel)
from secureml.errors import ProtocolError

__all__ = ["open_session", "ServerBusy", "ServerRefused", "connect_tls"]


class ServerBusy(ProtocolError):
    """The server answered "busy" to every try."""


class ServerRefused(ProtocolError):
    """The server refused the session (authentication, version, admission); ``code`` says why."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


def connect_tls(host: str, port: int, ssl_context: ssl.SSLContext | None, server_hostname: str | None,
                connect_timeout: float) -> socket.socket:
    """Steps 1-2: a connected (TLS-wrapped) socket, or ConnectFailed with a clear reason."""
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except (socket.timeout, TimeoutError):
        raise ProtocolTimeout(f"connecting to {host}:{port} timed out after {connect_timeout} s") from None
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    if ssl_context is None:
        return sock
    try:
        return ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise ConnectFailed(f"the server at {host}:{port} presented a certificate this client does not "
                            f"trust: {exc.verify_message} (check --ca and --tls-server-name)") from None
    except (socket.timeout, TimeoutError):
        sock.close()
        raise ProtocolTimeout(f"TLS handshake with {host}:{port} timed out after {connect_timeout} s") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        text = str(exc).upper()
        if "WRONG_VERSION" in text or "EOF" in text or "RESET" in text or "UNEXPECTED" in text \
                or isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            raise ConnectFailed(f"TLS handshake with {host}:{port} failed: the server does not speak TLS "
                                "(is it running without --tls-cert? then connect without --ca/--tls)") from None
        if "CERTIFICATE" in text or "ALERT" in text:
            raise ConnectFailed(f"TLS handshake with {host}:{port} failed: the server wants a client "
                                "certificate this client did not present or it does not trust "
                                "(give --cert/--key issued by the model owner)") from None
        raise ConnectFailed(f"TLS handshake with {host}:{port} failed: {exc}") from None


def open_session(host: str, port: int, hello: dict[str, Any], *, ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, connect_timeout: float = 10.0,
                 handshake_timeout: float = 30.0, channel_timeout: float | None = 300.0,
                 retries: int = 8, backoff: float = 0.5, max_backoff: float = 8.0,
                 max_reply: int = 1 << 20) -> tuple[TCPChannel, dict[str, Any]]:
    """Connect and exchange the hello (steps 1-4); returns (channel, the server's ok answer).

    The channel is left with ``channel_timeout`` as its per-read timeout and no deadline.
    """
    attempt = 0
    while True:
        wait: float | None = None
        try:
            return _try_once(host, port, hello, ssl_context, server_hostname, connect_timeout,
                             handshake_timeout, channel_timeout, max_reply)
        except _Retry as r:
            if attempt >= retries:
                if r.busy:
                    raise ServerBusy(f"the server at {host}:{port} is busy; gave up after {attempt + 1} tries") from None
                raise r.cause from None
            wait = r.retry_after
        # exponential backoff, never sooner than the server asked: many clients turned away
        # together must not come back together
        wait = max(wait or 0.0, min(max_backoff, backoff * (2 ** attempt)))
        time.sleep(min(30.0, wait) * random.uniform(0.8, 1.25))
        attempt += 1


class _Retry(Exception):
    def __init__(self, cause: ProtocolError, busy: bool = False, retry_after: float | None = None) -> None:
        self.cause, self.busy, self.retry_after = cause, busy, retry_after


def _try_once(host, port, hello, ssl_context, server_hostname, connect_timeout, handshake_timeout,
              channel_timeout, max_reply) -> tuple[TCPChannel, dict[str, Any]]:
    try:
        sock = connect_tls(host, port, ssl_context, server_hostname, connect_timeout)
    except ConnectFailed as exc:
        if "does not speak TLS" in str(exc) or "certificate" in str(exc):
            raise
        raise _Retry(exc) from None
    ch = TCPChannel(sock, timeout=handshake_timeout)
    ch.deadline = Deadline(handshake_timeout, "handshake")
    try:
        ch.send_json(hello)
        reply = ch.recv_json(max_bytes=max_reply)
    except (FrameTooLarge, MalformedMessage) as exc:
        ch.close()
        if "CERTIFICATE" in str(exc).upper():  # TLS 1.3 reports a refused client certificate here
            raise ServerRefused(f"the server at {host}:{port} requires a client certificate this client did "
                                "not present or it does not trust (give --cert/--key issued by the model "
                                "owner)", code="no-client-certificate") from None
        raise ProtocolError(f"the server at {host}:{port} did not answer as a secureml server ({exc})") from None
    except ProtocolTimeout:
        ch.close()
        raise ProtocolTimeout(f"no answer from {host}:{port} within {handshake_timeout} s "
                              "(is it a secureml server? is it TLS and this client plaintext?)") from None
    except PeerDisconnected as exc:
        ch.close()
        # a server shedding load closes before answering: retry
        raise _Retry(PeerDisconnected(f"the server at {host}:{port} closed the connection before "
                                      f"answering ({exc})")) from None
    if not isinstance(reply, dict):
        ch.close()
        raise ProtocolError(f"the server at {host}:{port} did not answer as a secureml server")
    if not reply.get("ok"):
        ch.close()
        err = reply.get("error")
        err = err if isinstance(err, str) and len(err) < 500 else "no reason given"
        if reply.get("busy"):
            ra = reply.get("retry_after")
            ra = float(ra) if isinstance(ra, (int, float)) and not isinstance(ra, bool) and 0 <= ra <= 60 else None
            raise _Retry(ServerBusy(f"the server at {host}:{port} is busy"), busy=True, retry_after=ra)
        code = reply.get("code") if isinstance(reply.get("code"), str) else "refused"
        ra = reply.get("retry_after")
        later = (f" (retry after {ra:.0f} s)" if isinstance(ra, (int, float)) and not isinstance(ra, bool)
                 and 0 < ra < 1e9 else "")
        raise ServerRefused(f"server refused: {err}{later}", code=code[:40])
    ch.deadline = None
    ch.timeout = channel_timeout
    return ch, reply
