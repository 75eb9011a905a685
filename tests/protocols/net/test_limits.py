"""Limits against slow and malformed peers: JSON nesting/size, per-read budgets, deadlines."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from protocols.net.limits import Deadline, json_depth, parse_json, read_budget, session_seconds
from protocols.net.transport import FrameTooLarge, MalformedMessage, ProtocolTimeout, TCPChannel, frame


def test_deep_json_is_a_clear_error_not_recursion():
    with pytest.raises(MalformedMessage, match="nested 4000 levels"):
        parse_json(b"[" * 4000 + b"]" * 4000, max_depth=32)
    # unbalanced / truncated nesting too (json.loads would recurse before seeing the error)
    with pytest.raises(MalformedMessage):
        parse_json(b"[" * 100_000, max_bytes=1 << 20)


def test_json_depth_ignores_brackets_in_strings_and_accepts_normal_messages():
    assert json_depth(b'{"a": "[[[[{{{{\\"[[[", "b": [1, [2]]}') == 3
    assert parse_json(b'{"protocol": "x", "v": [1, 2, {"k": "]]]"}]}') == {"protocol": "x", "v": [1, 2, {"k": "]]]"}]}
    assert json_depth(b"17") == 0


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"{", b'{"a": NaN}', b"[Infinity]", b'"\\ud800', b""])
def test_invalid_json_is_one_malformed_message(bad):
    with pytest.raises(MalformedMessage):
        parse_json(bad)


def test_oversized_json():
    with pytest.raises(FrameTooLarge):
        parse_json(b" " * 100, max_bytes=99)


def test_read_budget_and_session_seconds():
    assert read_budget(65536, 10.0, 65536) == pytest.approx(11.0)
    assert read_budget(10, None, 100) is None
    assert session_seconds(16384, 2) > session_seconds(1024, 1) > 0


def _trickle(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    for b in data:
        if stop.wait(every):
            return
        try:
            sock.send(bytes([b]))
        except OSError:
            return


def test_trickling_peer_cannot_hold_a_read():
    """A socket timeout restarts on each byte; the read budget does not."""
    a, b = socket.socketpair()
    ch = TCPChannel(a, timeout=0.5, background_writes=False)
    ch.min_rate = 1000.0  # 1 kB/s: 100 bytes may take 0.5 + 0.1 s
    stop = threading.Event()
    msg = frame(b"x" * 100)
    t = threading.Thread(target=_trickle, args=(b, msg, 0.2, stop), daemon=True)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(ProtocolTimeout, match="too slow|no data"):
        ch.recv()
    took = time.monotonic() - t0
    stop.set()
    b.close()
    assert took < 1.5, took  # a per-byte timeout would have waited 108 * 0.2 = 22 s


def test_deadline_bounds_every_read():
    a, b = socket.socketpair()
    ch = TCPChannel(a, timeout=30.0, background_writes=False)
    ch.deadline = Deadline(0.3, "handshake")
    t0 = time.monotonic()
    with pytest.raises(ProtocolTimeout, match="handshake deadline"):
        ch.recv_json()
    assert time.monotonic() - t0 < 1.0
    b.close()


def test_fast_reads_are_unaffected():
    a, b = socket.socketpair()
    ca = TCPChannel(a, timeout=2.0, background_writes=False)
    cb = TCPChannel(b, timeout=2.0)
    ca.min_rate = 1e6
    payload = bytes(range(256)) * 40000  # 10 MB
    t = threading.Thread(target=cb.send, args=(payload,))
    t.start()
    assert ca.recv(max_bytes=len(payload)) == payload
    t.join()
    ca.close(); cb.close()


@pytest.mark.parametrize("code", [b",", b"i8,i8", b"(2,)i8", b"O", b"V8", b"c16", b"S4", b"<f8 ", b"\xff"])
def test_array_header_dtype_is_whitelisted(code):
    """Found by bench/serving_fuzz: a dtype of "," made numpy's dtype parser raise SyntaxError."""
    import struct

    a, b = socket.socketpair()
    ch = TCPChannel(a, timeout=2.0, background_writes=False)
    body = b"\x93A" + bytes([len(code)]) + code + bytes([1]) + struct.pack("<Q", 1) + b"\x00" * 8
    b.sendall(frame(body))
    with pytest.raises(MalformedMessage):
        ch.recv_array()
    b.close()
