"""Message transport for the two-party protocols: framed byte channels that count their traffic.

A :class:`Channel` carries *frames*: an 8-byte header (big-endian payload length, then the
sender's acknowledgement: how many of the receiver's messages it had read when it sent the frame)
followed by that many payload bytes.  On top of frames it offers raw messages (:meth:`Channel.send` / :meth:`Channel.recv`),
numpy arrays (a small header with dtype and shape, then the raw bytes split into frames of at most
``max_frame`` bytes) and JSON objects.  Two implementations share all of that logic:

* :class:`TCPChannel` -- a socket (optionally TLS-wrapped) between two processes, ``TCP_NODELAY``;
  create it with :func:`connect` (client) or :meth:`TCPChannel.accept` (server, on a socket from
  :func:`listen`).
* :func:`local_channel_pair` -- two in-process endpoints joined by thread-safe queues, for unit
  tests; it frames and counts exactly like TCP, so traffic figures measured in tests are real.

Every failure is a :class:`secureml.errors.ProtocolError` subclass: :class:`PeerDisconnected`,
:class:`FrameTooLarge`, :class:`MalformedMessage`, :class:`ProtocolTimeout` (and
:class:`ConnectFailed` when no connection can be made).  After a framing error the stream position
is unknown, so the channel closes itself; any later call raises :class:`PeerDisconnected`.

Traffic counters (per endpoint): ``bytes_sent`` / ``bytes_received`` include the 8-byte frame
headers and array headers, ``messages_sent`` counts logical messages (one per ``send*`` call).

Rounds, defined once here for every engine and both parties: a message's *depth* is one more than
the depth of the latest message its sender had read before sending it (1 if none), and ``rounds`` is
the largest depth of any message sent or read on the channel -- the length of the longest chain of
messages each of which waits for the one before, i.e. how many one-way latencies a session costs.
A run of messages in one direction counts once, and so do two flights that cross on the wire. The
acknowledgement in every frame header lets the receiver compute the depth of each message it reads
exactly as its sender did, so the client and the server of one session report the same number
however their sends and receives interleave locally (a per-endpoint count of direction changes
did not: with pipelined sends the server counted 34 where the client counted 32). The peer's
acknowledgement is checked (never more messages than were sent, never fewer than before).

Threat model: the transport adds no secrecy of its own; use TLS (``ssl_context``) when the link is
not trusted.  Peers are untrusted for *robustness*: no length, dtype or shape from the wire is
believed before it is checked against local limits.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import queue
import re
from abc import ABC, abstractmethod
from collections import deque
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from protocols.net.errors import ConnectFailed, FrameTooLarge, MalformedMessage, PeerDisconnected, ProtocolTimeout
from protocols.net.limits import DEFAULT_LIMITS, Deadline, parse_json, read_budget
from secureml.errors import ProtocolError

__all__ = [
    "Channel",
    "TCPChannel",
    "LocalChannel",
    "connect",
    "listen",
    "local_channel_pair",
    "PeerDisconnected",
    "FrameTooLarge",
    "MalformedMessage",
    "ProtocolTimeout",
    "ConnectFailed",
    "DEFAULT_MAX_FRAME",
    "FRAME_HEADER_BYTES",
    "frame",
]

DEFAULT_MAX_FRAME = 64 << 20
DEFAULT_MAX_MESSAGE = 2 << 30
_WRITE_QUEUE_FRAMES = 16
# payload length, then the acknowledgement that defines rounds (module docstring)
_HEADER = struct.Struct(">II")
FRAME_HEADER_BYTES = _HEADER.size
_ARRAY_MAGIC = b"\x93A"
# Only plain numeric dtypes may come off the wire (never object arrays).
_ALLOWED_KINDS = frozenset("biuf")
_MAX_NDIM = 8
_DTYPE_CODE = re.compile(rb"[<>|=]?[biuf][0-9]{1,2}")


def _nbytes(part: Any) -> int:
    return memoryview(part).nbytes


def frame(payload: bytes, ack: int = 0) -> bytes:
    """One raw frame as it goes on the wire (for code that writes to a bare socket: a refusal
    before any channel exists, fuzzers and tests); ``ack`` as in the module docstring."""
    return _HEADER.pack(len(payload), ack) + payload


class Channel(ABC):
    """Abstract framed, counting, bidirectional channel between two parties.

    Subclasses provide three byte-stream primitives: :meth:`_write` (write all parts),
    :meth:`_read_into` (fill a writable buffer exactly) and :meth:`_close_stream`.
    """

    def __init__(self, timeout: float | None = 60.0, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        #: Largest array message (all frames together) accepted when recv_array gets no max_bytes.
        self.max_message = DEFAULT_MAX_MESSAGE
        if max_frame < 64 or max_frame > 0xFFFFFFFF:
            raise ValueError("max_frame must be in [64, 2**32 - 1]")
        self.max_frame = int(max_frame)
        self._timeout = timeout
        #: minimum average transfer rate (bytes/s) a read must keep after ``timeout`` seconds;
        #: a read of n bytes may take ``timeout + n / min_rate`` seconds in all, however the
        #: bytes trickle in (None: the timeout restarts on every received chunk, as a plain
        #: socket timeout does).
        self.min_rate: float | None = DEFAULT_LIMITS.min_rate
        #: absolute deadline for every blocking operation (whole handshake or session), or None
        self.deadline: Deadline | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        #: largest message depth seen on this channel (module docstring: the one definition)
        self.rounds = 0
        # depths of our messages the peer has not acknowledged yet (non-decreasing), how many it
        # has acknowledged and the depth of the last of those, the depth of the peer's latest message
        self._unacked: deque[int] = deque()
        self._acked = 0
        self._acked_depth = 0
        self._peer_depth = 0
        self._closed = False
        #: When a list, every frame payload is appended as ("send" | "recv", bytes): for tests
        #: that check that no secret value ever appears on the wire.
        self.transcript: list[tuple[str, bytes]] | None = None

    # ----------------------------------------------------------------- settings
    @property
    def timeout(self) -> float | None:
        """Seconds to wait for the peer in one blocking operation (None: wait forever)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._timeout = value
        self._apply_timeout()

    def _apply_timeout(self) -> None:  # TCP overrides
        pass

    def record(self) -> list[tuple[str, bytes]]:
        """Start recording raw frame payloads; returns the (live) transcript list."""
        self.transcript = []
        return self.transcript

    # ------------------------------------------------------- stream primitives
    @abstractmethod
    def _write(self, parts: Sequence[Any], wait: bool = True) -> None:
        """Stream primitive: write all parts in order.  With ``wait=False`` the transport may
        return before the bytes are written (the caller then must not modify the buffers)."""

    @abstractmethod
    def _read_into(self, buf: memoryview) -> None:
        """Stream primitive implemented by each transport."""

    @abstractmethod
    def _close_stream(self) -> None:
        """Stream primitive implemented by each transport."""

    # ----------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise PeerDisconnected("channel is closed")

    def _read_until(self, n: int) -> float | None:
        """Monotonic time by which a read of ``n`` bytes must be complete (None: no bound).

        The earlier of the per-read budget (``timeout + n / min_rate``, not restarted by each
        byte, so a peer trickling one byte a second cannot hold the read) and :attr:`deadline`.
        """
        until = None
        if self._timeout is not None and self.min_rate:
            until = time.monotonic() + read_budget(n, self._timeout, self.min_rate)
        if self.deadline is not None and self.deadline.at is not None:
            until = self.deadline.at if until is None else min(until, self.deadline.at)
        return until

    def _timeout_message(self, n: int, got: int) -> str:
        if self.deadline is not None and self.deadline.expired:
            return f"{self.deadline.what} deadline passed (peer sent {got} of {n} bytes)"
        if got:
            return f"peer too slow: {got} of {n} bytes within the allowed time"
        return f"no data from peer within {self._timeout} s"

    def _sent_message(self) -> None:
        """Book a message whose first frame is on its way: its depth is one more than the
        peer's latest message we read (the acknowledgement its frames carried)."""
        depth = self._peer_depth + 1
        self._unacked.append(depth)
        self.rounds = max(self.rounds, depth)
        self.messages_sent += 1

    def _check_ack(self, ack: int) -> None:
        """A peer's acknowledgement must lie between its previous one and our messages so far
        (an old 4-byte-header peer fails here: its payload's first bytes read as a huge count)."""
        if not self._acked <= ack <= self._acked + len(self._unacked):
            raise self._fail(MalformedMessage(
                f"peer's frame header acknowledges {ack} messages; {self._acked}.."
                f"{self._acked + len(self._unacked)} possible (a peer with another transport version?)"))

    def _read_message_start(self, ack: int) -> None:
        """The first frame of a peer's message arrived with ``ack``: its depth, as its sender
        computed it (one more than the depth of our latest message it had read)."""
        while self._acked < ack:
            self._acked_depth = self._unacked.popleft()
            self._acked += 1
        self._peer_depth = self._acked_depth + 1
        self.rounds = max(self.rounds, self._peer_depth)

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        """Close after an error that leaves the stream position unknown; return exc to raise."""
        self.close()
        return exc

    @property
    def pipelined(self) -> bool:
        """True when sends never wait for the peer to read (queued locally), so a protocol may
        send its next message before reading the peer's reply without risking a deadlock."""
        return False

    def flush(self) -> None:
        """Wait until every queued message has been handed to the operating system."""

    def _send_frame(self, parts: Sequence[Any], wait: bool = True) -> None:
        size = sum(_nbytes(p) for p in parts)
        if size > self.max_frame:
            raise FrameTooLarge(f"frame of {size} bytes exceeds max_frame={self.max_frame}")
        if self.transcript is not None:
            self.transcript.append(("send", b"".join(bytes(memoryview(p).cast("B")) for p in parts)))
        self._write([_HEADER.pack(size, self.messages_received), *parts], wait)
        self.bytes_sent += _HEADER.size + size

    def _recv_prefix(self, limit: int, first: bool = False) -> int:
        """Read a frame header; ``first``: it opens a message (its acknowledgement sets the
        message's depth). Returns the payload size."""
        head = bytearray(_HEADER.size)
        self._read_into(memoryview(head))
        size, ack = _HEADER.unpack(head)
        self.bytes_received += _HEADER.size
        self._check_ack(ack)
        if first:
            self._read_message_start(ack)
        if size > min(limit, self.max_frame):
            raise self._fail(
                FrameTooLarge(
                    f"peer sent a frame of {size} bytes; limit is {min(limit, self.max_frame)}"
                )
            )
        return size

    def _recv_payload(self, buf: memoryview) -> None:
        self._read_into(buf)
        self.bytes_received += buf.nbytes
        if self.transcript is not None:
            self.transcript.append(("recv", bytes(buf)))

    # ------------------------------------------------------------ raw messages
    def send(self, data: bytes) -> None:
        """Send one message of raw bytes (one frame, at most ``max_frame`` bytes)."""
        self._check_open()
        self._send_frame([data])
        self._sent_message()

    def send_parts(self, parts: Sequence[Any]) -> None:
        """Send one message made of several buffers: the same frame (and bytes on the wire) as
        ``send(b"".join(parts))``, without joining them first (one copy fewer of a large message)."""
        self._check_open()
        self._send_frame(list(parts))
        self._sent_message()

    def recv(self, max_bytes: int | None = None) -> bytes:
        """Receive one raw message; :class:`FrameTooLarge` if it exceeds ``max_bytes``."""
        return bytes(self.recv_bytearray(max_bytes))

    def recv_bytearray(self, max_bytes: int | None = None) -> bytearray:
        """:meth:`recv` into a fresh buffer that the caller owns (no copy into ``bytes``)."""
        self._check_open()
        size = self._recv_prefix(self.max_frame if max_bytes is None else max_bytes, first=True)
        buf = bytearray(size)
        self._recv_payload(memoryview(buf))
        self.messages_received += 1
        return buf

    # ------------------------------------------------------------------ arrays
    def send_array(self, a: np.ndarray, *, owned: bool = False) -> None:
        """Send a numeric array: header (dtype, shape) then raw C-order bytes in frames.

        ``owned=True`` promises that nobody modifies ``a`` afterwards; a pipelined channel may
        then queue it without copying and return at once.
        """
        self._check_open()
        a = np.asarray(a)
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            a = a.copy(order="C")
        if a.dtype.kind not in _ALLOWED_KINDS or a.ndim > _MAX_NDIM:
            raise MalformedMessage(f"cannot send array of dtype {a.dtype} / ndim {a.ndim}")
        dt = a.dtype.str.encode("ascii")
        header = (
            _ARRAY_MAGIC
            + bytes([len(dt)])
            + dt
            + bytes([a.ndim])
            + struct.pack(f"<{a.ndim}Q", *a.shape)
        )
        raw = memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")
        first = min(raw.nbytes, self.max_frame - len(header))
        wait = not owned
        self._send_frame([header, raw[:first]], wait)
        self._sent_message()
        pos = first
        while pos < raw.nbytes:
            end = min(raw.nbytes, pos + self.max_frame)
            self._send_frame([raw[pos:end]], wait)
            pos = end

    def recv_array(
        self,
        dtype: Any = None,
        shape: Sequence[int | None] | None = None,
        max_bytes: int | None = None,
    ) -> np.ndarray:
        """Receive an array sent by :meth:`send_array`.

        ``dtype`` and ``shape`` (entries may be None as wildcards) are checked against the header;
        a mismatch, a malformed header or a size over ``max_bytes`` raises a ProtocolError.
        """
        self._check_open()
        size = self._recv_prefix(self.max_frame, first=True)
        if size < 4:
            raise self._fail(MalformedMessage(f"array frame of {size} bytes is too short"))
        fixed = bytearray(3)
        self._recv_payload(memoryview(fixed))
        if bytes(fixed[:2]) != _ARRAY_MAGIC or not 1 <= fixed[2] <= 8:
            raise self._fail(MalformedMessage("expected an array message, got something else"))
        rest = size - 3
        dlen = fixed[2]
        if rest < dlen + 1:
            raise self._fail(MalformedMessage("truncated array header"))
        dbuf = bytearray(dlen + 1)
        self._recv_payload(memoryview(dbuf))
        rest -= dlen + 1
        ndim = dbuf[-1]
        # numpy parses dtype strings with a small language (commas, sub-arrays, literal_eval):
        # only plain numeric codes such as "<u8" reach it (a fuzzed "," raised SyntaxError)
        text = bytes(dbuf[:-1])
        if _DTYPE_CODE.fullmatch(text) is None:
            raise self._fail(MalformedMessage("array header names an invalid dtype"))
        try:
            got_dtype = np.dtype(text.decode("ascii"))
        except (TypeError, ValueError, UnicodeDecodeError, SyntaxError):
            raise self._fail(MalformedMessage("array header names an invalid dtype")) from None
        if got_dtype.kind not in _ALLOWED_KINDS or got_dtype.itemsize > 16 or ndim > _MAX_NDIM:
            raise self._fail(MalformedMessage(f"array dtype {got_dtype} / ndim {ndim} not allowed"))
        if rest < 8 * ndim:
            raise self._fail(MalformedMessage("truncated array shape"))
        sbuf = bytearray(8 * ndim)
        self._recv_payload(memoryview(sbuf))
        rest -= 8 * ndim
        got_shape = struct.unpack(f"<{ndim}Q", sbuf)
        count = 1
        for s in got_shape:
            count *= s
        total = count * got_dtype.itemsize
        limit = self.max_message if max_bytes is None else max_bytes
        if total > limit:
            raise self._fail(FrameTooLarge(f"array of {total} bytes exceeds limit {limit}"))
        if dtype is not None and got_dtype != np.dtype(dtype):
            raise self._fail(MalformedMessage(f"expected dtype {np.dtype(dtype)}, got {got_dtype}"))
        if shape is not None:
            shape = tuple(shape)
            if len(shape) != ndim or any(
                e is not None and e != g for e, g in zip(shape, got_shape)
            ):
                raise self._fail(MalformedMessage(f"expected shape {shape}, got {got_shape}"))
        if rest > total:
            raise self._fail(MalformedMessage("array frame longer than its header says"))
        out = np.empty(got_shape, dtype=got_dtype)
        mv = memoryview(out.reshape(-1).view(np.uint8)) if total else memoryview(bytearray(0))
        self._recv_payload(mv[:rest])
        pos = rest
        while pos < total:
            size = self._recv_prefix(self.max_frame)
            if size == 0 or pos + size > total:
                raise self._fail(MalformedMessage("array continuation frame has the wrong size"))
            self._recv_payload(mv[pos : pos + size])
            pos += size
        self.messages_received += 1
        return out

    # -------------------------------------------------------------------- JSON
    def send_json(self, obj: Any) -> None:
        """Send a JSON-serialisable object as one UTF-8 message."""
        self.send(json.dumps(obj, separators=(",", ":")).encode("utf-8"))

    def recv_json(self, max_bytes: int = 1 << 20, max_depth: int = DEFAULT_LIMITS.max_json_depth) -> Any:
        """Receive one JSON message; :class:`MalformedMessage` if it does not parse or nests
        deeper than ``max_depth`` (checked before parsing: no RecursionError from a peer)."""
        data = self.recv(max_bytes)
        return parse_json(data, max_bytes=max_bytes, max_depth=max_depth)

    # ------------------------------------------------------------------- close
    def close(self) -> None:
        """Close the channel (idempotent); the peer's pending and later reads fail promptly."""
        if not self._closed:
            self._closed = True
            self._close_stream()

    @property
    def closed(self) -> bool:
        return self._closed

    def begin_session(self) -> None:
        """Start counting a new session on a kept-alive connection (protocols.net.frontdoor):
        bytes, messages and rounds from zero. Both ends call it at the session boundary (the
        client before its next hello, the server before reading it), when every message of the
        previous session has been read, so both still compute the same depth for each message:
        the message counts that frame headers acknowledge keep running (the peer checks them),
        only the depths are re-based (the next hello has depth 1 on both sides)."""
        self.bytes_sent = self.bytes_received = 0
        self.messages_sent = 0  # (messages_received is the acknowledgement: it keeps running)
        self.rounds = 0
        self._unacked = deque(0 for _ in self._unacked)
        self._acked_depth = 0
        self._peer_depth = 0

    def stats(self) -> dict[str, int]:
        """Counters as a dict (for reports)."""
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "rounds": self.rounds,
        }

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TCPChannel(Channel):
    """Framed channel over a connected (optionally TLS) socket."""

    def __init__(
        self,
        sock: socket.socket,
        timeout: float | None = 60.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        background_writes: bool | None = None,
    ) -> None:
        """``background_writes`` (default: on for plain TCP, off for TLS, whose socket objects
        must not be read and written from two threads) starts a writer thread that drains a
        queue of outgoing frames, making the channel :attr:`pipelined`."""
        super().__init__(timeout=timeout, max_frame=max_frame)
        self.sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket (e.g. a socketpair in tests)
            pass
        self._apply_timeout()
        if background_writes is None:
            background_writes = not isinstance(sock, ssl.SSLSocket)
        self._wq: "queue.Queue[tuple[Sequence[Any], threading.Event | None] | None] | None" = None
        self._werr: ProtocolError | None = None
        self._writer: threading.Thread | None = None
        # frames queued but not yet on the socket; a waiting write with none outstanding goes out
        # from the caller's thread (two thread hand-offs less per message: ~0.1 ms idle, several
        # ms on a loaded machine), in order because everything queued before it has been sent
        self._send_lock = threading.Lock()
        self._outstanding = 0
        # the writer thread starts with the first write that must not wait (a session that only
        # ever waits for its writes -- short ones -- never pays for the thread or its shutdown)
        self._background = bool(background_writes)
        # frames held by :meth:`corked` (None: write at once)
        self._corked: list[Any] | None = None

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """Hold the frames sent inside the block and write them in one call at its end: several
        small messages that are ready together leave in one segment (one syscall on this side, one
        wake-up on the peer's) with the same bytes on the wire as separate sends. Nothing may be
        read inside the block (the frames' acknowledgements are fixed when they are sent)."""
        if self._corked is not None:
            yield
            return
        self._corked = []
        try:
            yield
        finally:
            held, self._corked = self._corked, None
        if held:
            self._write(held)

    def _start_writer(self) -> None:
        # Bounded: a protocol that races ahead blocks here instead of queueing gigabytes.
        self._wq = queue.Queue(maxsize=_WRITE_QUEUE_FRAMES)
        self._writer = threading.Thread(target=self._writer_loop, daemon=True, name="tcp-writer")
        self._writer.start()
        _LIVE_WRITERS.add(self)

    @property
    def pipelined(self) -> bool:
        return self._background

    def _writer_loop(self) -> None:
        assert self._wq is not None
        while True:
            item = self._wq.get()
            if item is None:
                return
            parts, done = item
            try:
                with self._send_lock:
                    try:
                        if self._werr is None:
                            self._sendall(parts)
                    finally:
                        self._outstanding -= 1
            except ProtocolError as exc:
                self._werr = exc
            finally:
                if done is not None:
                    done.set()

    def _raise_writer_error(self) -> None:
        if self._werr is not None:
            raise self._fail(type(self._werr)(str(self._werr)))

    def flush(self) -> None:
        if self._writer is not None and not self._closed:
            done = threading.Event()
            assert self._wq is not None
            with self._send_lock:
                self._outstanding += 1
            self._wq.put(([], done))
            done.wait()
            self._raise_writer_error()

    def _apply_timeout(self) -> None:
        self.sock.settimeout(self._timeout)

    @classmethod
    def accept(
        cls,
        listening_socket: socket.socket,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = 60.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> "TCPChannel":
        """Accept one connection on a listening socket (server side), with optional TLS."""
        prev = listening_socket.gettimeout()
        listening_socket.settimeout(timeout)
        try:
            conn, _ = listening_socket.accept()
        except (socket.timeout, TimeoutError):
            raise ProtocolTimeout(f"no client connected within {timeout} s") from None
        finally:
            listening_socket.settimeout(prev)
        conn.settimeout(timeout)
        if ssl_context is not None:
            try:
                conn = ssl_context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                conn.close()
                raise ConnectFailed(f"TLS handshake with client failed: {exc}") from None
        return cls(conn, timeout=timeout, max_frame=max_frame)

    def _write(self, parts: Sequence[Any], wait: bool = True) -> None:
        self._check_open()
        if self._corked is not None:
            # a copy of a mutable buffer (the caller may reuse it); bytes are immutable: kept as they are
            self._corked.extend(p if type(p) is bytes else bytes(memoryview(p).cast("B")) for p in parts)
            return
        if not self._background:
            try:
                self._sendall(parts)
            except ProtocolError as exc:
                raise self._fail(exc) from None
            return
        self._raise_writer_error()
        if wait:
            failed: ProtocolError | None = None
            with self._send_lock:
                direct = self._outstanding == 0
                if direct:
                    try:
                        self._sendall(parts)
                    except ProtocolError as exc:
                        failed = exc
            if failed is not None:
                raise self._fail(failed) from None
            if direct:
                return
        if self._writer is None:
            self._start_writer()
        done = threading.Event() if wait else None
        assert self._wq is not None
        with self._send_lock:
            self._outstanding += 1
        self._wq.put((parts, done))
        if done is not None:
            done.wait()
            self._raise_writer_error()

    def _sendall(self, parts: Sequence[Any]) -> None:
        try:
            if len(parts) > 1 and not isinstance(self.sock, ssl.SSLSocket):
                # gather write: every part in one syscall (one segment train, one wake-up of the
                # peer), no joined copy of a large message
                self._sendmsg_all(parts)
                return
            small = sum(_nbytes(p) for p in parts) <= 65536
            if small:
                # One syscall (and, with TCP_NODELAY, one segment) for small messages.
                self.sock.sendall(b"".join(parts))
            else:
                for p in parts:
                    if _nbytes(p):
                        self.sock.sendall(p)
        except (socket.timeout, TimeoutError):
            raise ProtocolTimeout(f"peer did not accept data within {self._timeout} s") from None
        except (ssl.SSLError, OSError) as exc:
            raise PeerDisconnected(f"connection lost while sending: {exc}") from None

    def _sendmsg_all(self, parts: Sequence[Any]) -> None:
        """sendmsg until every byte of ``parts`` is written (a partial write resumes where it stopped)."""
        bufs = deque(m for m in (memoryview(p).cast("B") for p in parts) if m.nbytes)
        while bufs:
            sent = self.sock.sendmsg(bufs)
            while bufs and sent >= bufs[0].nbytes:
                sent -= bufs.popleft().nbytes
            if sent:
                bufs[0] = bufs[0][sent:]

    def _read_into(self, buf: memoryview) -> None:
        self._check_open()
        view = buf.cast("B") if buf.format != "B" else buf
        got = 0
        n = view.nbytes
        until = self._read_until(n)
        try:
            while got < n:
                if until is not None:
                    left = until - time.monotonic()
                    if left <= 0:
                        raise socket.timeout
                    self.sock.settimeout(left)
                k = self.sock.recv_into(view[got:], n - got)
                if k == 0:
                    raise self._fail(PeerDisconnected("peer closed the connection"))
                got += k
        except (socket.timeout, TimeoutError):
            raise self._fail(ProtocolTimeout(self._timeout_message(n, got)))
        except ssl.SSLError as exc:
            raise self._fail(MalformedMessage(f"TLS error: {exc}"))
        except OSError as exc:
            raise self._fail(PeerDisconnected(f"connection lost while receiving: {exc}"))
        finally:
            if until is not None and not self._closed:
                # the background writer shares this socket: give its sendall the full timeout
                self.sock.settimeout(self._timeout)

    def _close_stream(self) -> None:
        if self._writer is not None and self._writer is not threading.current_thread():
            # Deliver what is queued (the peer may be waiting for our last message), but never
            # wait for a peer that stopped reading longer than the timeout.
            assert self._wq is not None
            self._wq.put(None)
            self._writer.join(min(self._timeout, 5.0) if self._timeout is not None else 5.0)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def listen(host: str = "127.0.0.1", port: int = 0, backlog: int = 8) -> socket.socket:
    """A listening TCP socket (port 0 picks a free port: read it from ``getsockname()[1]``)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(backlog)
    return srv


def connect(
    host: str,
    port: int,
    timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
    channel_timeout: float | None = 60.0,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> TCPChannel:
    """Connect to a listening party; ``timeout`` bounds the connect (and TLS handshake)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (socket.timeout, TimeoutError):
        raise ProtocolTimeout(f"connecting to {host}:{port} timed out after {timeout} s") from None
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {host}:{port}: {exc}") from None
    if ssl_context is not None:
        try:
            sock = ssl_context.wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise ConnectFailed(f"TLS handshake with {host}:{port} failed: {exc}") from None
    return TCPChannel(sock, timeout=channel_timeout, max_frame=max_frame)


_EOF = None

# Channels with a writer thread: flushed at interpreter exit, so a program that ends without
# close() still delivers the messages it queued (the writer threads are daemons).
_LIVE_WRITERS: "weakref.WeakSet[TCPChannel]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for ch in list(_LIVE_WRITERS):
        try:
            ch.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass


class LocalChannel(Channel):
    """One endpoint of an in-process channel pair (see :func:`local_channel_pair`)."""

    def __init__(
        self,
        inbox: "queue.Queue[bytes | None]",
        outbox: "queue.Queue[bytes | None]",
        timeout: float | None,
        max_frame: int,
    ) -> None:
        super().__init__(timeout=timeout, max_frame=max_frame)
        self._inbox = inbox
        self._outbox = outbox
        self._buf = memoryview(b"")
        self._eof = False
        self._lock = threading.Lock()

    @property
    def pipelined(self) -> bool:
        return True  # the queues are unbounded: a send never waits for the peer

    def _write(self, parts: Sequence[Any], wait: bool = True) -> None:
        self._check_open()
        # Copy: the receiver must never alias the sender's (mutable) arrays.
        self._outbox.put(b"".join(parts))

    def _read_into(self, buf: memoryview) -> None:
        self._check_open()
        view = buf.cast("B") if buf.format != "B" else buf
        got, n = 0, view.nbytes
        while got < n:
            if not self._buf.nbytes:
                if self._eof:
                    raise self._fail(PeerDisconnected("peer closed the connection"))
                wait = self._timeout
                if self.deadline is not None and self.deadline.at is not None:
                    left = self.deadline.remaining() or 0.0
                    wait = left if wait is None else min(wait, left)
                try:
                    item = self._inbox.get(timeout=wait)
                except queue.Empty:
                    raise self._fail(
                        ProtocolTimeout(f"no data from peer within {self._timeout} s")
                    ) from None
                if item is _EOF:
                    self._eof = True
                    continue
                self._buf = memoryview(item)
            k = min(n - got, self._buf.nbytes)
            view[got : got + k] = self._buf[:k]
            self._buf = self._buf[k:]
            got += k

    def _close_stream(self) -> None:
        self._outbox.put(_EOF)
        # Wake our own blocked reader, if any (another thread), so close() never leaves a hang.
        self._inbox.put(_EOF)


def local_channel_pair(
    timeout: float | None = 60.0, max_frame: int = DEFAULT_MAX_FRAME
) -> tuple[LocalChannel, LocalChannel]:
    """Two connected in-process endpoints (thread-safe queues), framed and counted like TCP."""
    a_to_b: "queue.Queue[bytes | None]" = queue.Queue()
    b_to_a: "queue.Queue[bytes | None]" = queue.Queue()
    return (
        LocalChannel(b_to_a, a_to_b, timeout, max_frame),
        LocalChannel(a_to_b, b_to_a, timeout, max_frame),
    )
