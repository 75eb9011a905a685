"""Transport: framing, counting, limits, timeouts, disconnects, real TCP between processes, TLS."""
from __future__ import annotations

import datetime
import ipaddress
import multiprocessing as mp
import socket
import ssl
import struct
import threading
import time

import numpy as np
import pytest

from protocols.net.transport import (
    FRAME_HEADER_BYTES,
    ConnectFailed,
    FrameTooLarge,
    MalformedMessage,
    PeerDisconnected,
    ProtocolTimeout,
    TCPChannel,
    connect,
    frame,
    listen,
    local_channel_pair,
)
from secureml.errors import ProtocolError


def _pair_tcp(timeout: float = 10.0, **kw):
    """A connected TCP channel pair in one process (server accepted in a thread)."""
    srv = listen()
    port = srv.getsockname()[1]
    box: dict = {}

    def acc() -> None:
        box["ch"] = TCPChannel.accept(srv, timeout=timeout, **kw)

    t = threading.Thread(target=acc)
    t.start()
    cli = connect("127.0.0.1", port, channel_timeout=timeout, **kw)
    t.join()
    srv.close()
    return box["ch"], cli


@pytest.fixture(params=["local", "tcp"])
def pair(request):
    a, b = local_channel_pair(timeout=10.0) if request.param == "local" else _pair_tcp()
    yield a, b
    a.close()
    b.close()


def test_roundtrip_bytes_arrays_json_and_counters(pair):
    a, b = pair
    a.send(b"hello")
    assert b.recv() == b"hello"
    arrays = [
        np.arange(10, dtype=np.uint64),
        np.zeros((0, 3), dtype=np.float32),
        np.array(7, dtype=np.int16),
        np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.array([True, False]),
    ]
    for x in arrays:
        b.send_array(x)
        y = a.recv_array(dtype=x.dtype, shape=x.shape)
        assert y.dtype == x.dtype and np.array_equal(x, y)
    a.send_json({"k": [1, 2.5, "x"]})
    assert b.recv_json() == {"k": [1, 2.5, "x"]}
    assert a.bytes_sent == b.bytes_received and b.bytes_sent == a.bytes_received
    assert a.messages_sent == 2 and b.messages_sent == len(arrays)
    # a: send, recv x6, send -> 3 direction runs
    assert a.rounds == 3 and b.rounds == 3


def test_large_array_split_into_frames():
    a, b = local_channel_pair(timeout=10.0, max_frame=4096)
    x = np.random.default_rng(1).integers(0, 2**63, 5000, dtype=np.uint64)  # 40 kB > 4 kB frames
    a.send_array(x)
    assert np.array_equal(b.recv_array(np.uint64, (None,)), x)
    assert a.bytes_sent == b.bytes_received
    n_frames = -(-(x.nbytes + 20) // 4096)
    assert x.nbytes < a.bytes_sent <= x.nbytes + FRAME_HEADER_BYTES * (n_frames + 1) + 32


def test_framing_overhead_is_small(pair):
    a, b = pair
    x = np.zeros((128, 1 << 14), dtype=np.uint8)  # 2 MiB
    before = a.bytes_sent
    a.send_array(x)
    b.recv_array()
    assert a.bytes_sent - before - x.nbytes < 64


def test_dtype_and_shape_checks(pair):
    a, b = pair
    a.send_array(np.zeros(4, dtype=np.uint32))
    with pytest.raises(MalformedMessage, match="dtype"):
        b.recv_array(dtype=np.uint64)
    a2, b2 = local_channel_pair(timeout=5.0)
    a2.send_array(np.zeros((2, 3), dtype=np.uint64))
    with pytest.raises(MalformedMessage, match="shape"):
        b2.recv_array(dtype=np.uint64, shape=(3, 2))
    a2.close()
    # After a malformed message the channel is closed: later calls fail, never hang.
    with pytest.raises(PeerDisconnected):
        b2.recv()


def test_array_size_limit(pair):
    a, b = pair
    a.send_array(np.zeros(1000, dtype=np.uint64))
    with pytest.raises(FrameTooLarge):
        b.recv_array(max_bytes=100)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\x01", b"garbage that is not an array header", b"\x93A\x03<O8\x01" + bytes(8),
     b"\x93A\x03<u8\x01" + struct.pack("<Q", 2) + bytes(24)],
)
def test_garbage_array_frames_are_rejected(payload):
    a, b = local_channel_pair(timeout=5.0)
    a.send(payload)
    with pytest.raises(MalformedMessage):
        b.recv_array()


def test_oversized_frame_rejected_before_reading(pair):
    a, b = pair
    a.send(bytes(1000))
    with pytest.raises(FrameTooLarge):
        b.recv(max_bytes=999)
    with pytest.raises(FrameTooLarge):
        a.send(bytes(a.max_frame + 1))


def test_bad_json(pair):
    a, b = pair
    a.send(b"{not json")
    with pytest.raises(MalformedMessage):
        b.recv_json()


def test_timeout_is_prompt(pair):
    a, b = pair
    b.timeout = 0.2
    t = time.perf_counter()
    with pytest.raises(ProtocolTimeout):
        b.recv()
    assert time.perf_counter() - t < 2.0


def test_peer_disconnect(pair):
    a, b = pair
    a.send(b"last words")
    a.close()
    assert b.recv() == b"last words"
    t = time.perf_counter()
    with pytest.raises(PeerDisconnected):
        b.recv_array()
    assert time.perf_counter() - t < 2.0
    with pytest.raises(PeerDisconnected):
        a.send(b"x")


def test_disconnect_in_the_middle_of_a_frame():
    srv = listen()
    port = srv.getsockname()[1]
    raw = socket.create_connection(("127.0.0.1", port))
    ch = TCPChannel.accept(srv, timeout=5.0)
    raw.sendall(struct.pack(">II", 1000, 0) + bytes(10))  # promise 1000 bytes, send 10, hang up
    raw.close()
    with pytest.raises(PeerDisconnected):
        ch.recv()
    srv.close()


def test_rounds_are_one_definition_for_both_ends(pair):
    """Crossing flights: a sends m1 and m2 before reading b's reply x, b replies to m1 before
    reading m2. A per-endpoint count of direction changes gives a 2 and b 3; the message depth
    (x answers m1; m1, m2 wait for nothing) gives both 2."""
    a, b = pair
    a.send(b"m1")
    a.send(b"m2")
    assert b.recv() == b"m1"
    b.send(b"x")
    assert a.recv() == b"x"
    assert b.recv() == b"m2"
    assert a.rounds == b.rounds == 2
    # a strict ping-pong: every message waits for the one before
    for i in range(3):
        a.send(b"p")
        b.recv()
        b.send(b"q")
        a.recv()
    assert a.rounds == b.rounds == 2 + 6


def test_peer_cannot_acknowledge_messages_never_sent():
    """The acknowledgement in a frame header is checked: more messages than were sent (an old
    4-byte-header peer's payload reads as such a count), or fewer than the peer acknowledged before."""
    srv = listen()
    port = srv.getsockname()[1]
    raw = socket.create_connection(("127.0.0.1", port))
    ch = TCPChannel.accept(srv, timeout=5.0)
    raw.sendall(frame(b"x", ack=1))  # ch has sent nothing yet
    with pytest.raises(MalformedMessage, match="acknowledges 1 messages"):
        ch.recv()
    raw.close()
    raw = socket.create_connection(("127.0.0.1", port))
    ch = TCPChannel.accept(srv, timeout=5.0)
    ch.send(b"a")
    raw.sendall(frame(b"x", ack=1) + frame(b"y", ack=0))  # the second goes back in time
    assert ch.recv() == b"x"
    with pytest.raises(MalformedMessage, match="acknowledges 0 messages"):
        ch.recv()
    raw.close()
    srv.close()


def test_raw_peer_sends_huge_length():
    srv = listen()
    port = srv.getsockname()[1]
    raw = socket.create_connection(("127.0.0.1", port))
    ch = TCPChannel.accept(srv, timeout=5.0)
    raw.sendall(b"\xff\xff\xff\xff" + bytes(4))  # length 2^32 - 1, acknowledgement 0
    with pytest.raises(FrameTooLarge):
        ch.recv_array()
    raw.close()
    srv.close()


def test_connect_failures():
    s = listen()
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectFailed):
        connect("127.0.0.1", port, timeout=2.0)
    assert issubclass(ConnectFailed, ProtocolError)
    srv = listen()
    with pytest.raises(ProtocolTimeout):
        TCPChannel.accept(srv, timeout=0.1)
    srv.close()


def test_transcript_records_frames(pair):
    a, b = pair
    tr = a.record()
    a.send(b"abc")
    b.recv()
    b.send_array(np.arange(3, dtype=np.uint8))
    a.recv_array()
    assert tr[0] == ("send", b"abc")
    assert tr[-1][0] == "recv" and tr[-1][1] == bytes([0, 1, 2])


# ------------------------------------------------------------ two real processes
def _echo_server(port_q: "mp.Queue") -> None:
    srv = listen()
    port_q.put(srv.getsockname()[1])
    ch = TCPChannel.accept(srv, timeout=20.0)
    x = ch.recv_array(dtype=np.uint64)
    ch.send_array(x * np.uint64(3))
    msg = ch.recv_json()
    ch.send_json({"echo": msg, "rounds": ch.rounds})
    ch.close()
    srv.close()


def test_tcp_between_two_processes():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_echo_server, args=(q,))
    proc.start()
    try:
        port = q.get(timeout=30)
        ch = connect("127.0.0.1", port, timeout=10.0, channel_timeout=20.0)
        x = np.arange(1 << 17, dtype=np.uint64)  # 1 MiB
        ch.send_array(x)
        assert np.array_equal(ch.recv_array(np.uint64, x.shape), x * np.uint64(3))
        ch.send_json([1, 2])
        reply = ch.recv_json()
        assert reply["echo"] == [1, 2] and reply["rounds"] == 3 and ch.rounds == 4
        ch.close()
    finally:
        proc.join(20)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0


# ------------------------------------------------------------------------- TLS
def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_tls_channel(tmp_path):
    cert_file, key_file = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(cert_file))
    srv = listen()
    port = srv.getsockname()[1]
    box: dict = {}

    def serve() -> None:
        ch = TCPChannel.accept(srv, ssl_context=server_ctx, timeout=10.0)
        x = ch.recv_array(np.uint64)
        ch.send_array(x + np.uint64(1))
        box["cipher"] = ch.sock.cipher()
        ch.close()

    t = threading.Thread(target=serve)
    t.start()
    ch = connect("localhost", port, ssl_context=client_ctx, channel_timeout=10.0)
    assert isinstance(ch.sock, ssl.SSLSocket)
    x = np.arange(100_000, dtype=np.uint64)
    ch.send_array(x)
    assert np.array_equal(ch.recv_array(np.uint64, x.shape), x + np.uint64(1))
    ch.close()
    t.join()
    srv.close()
    assert box["cipher"] is not None

    # A client that does not trust the certificate fails with a clear error, not a hang.
    srv = listen()
    port = srv.getsockname()[1]

    def serve_fail() -> None:
        try:
            TCPChannel.accept(srv, ssl_context=server_ctx, timeout=5.0)
        except ProtocolError:
            pass

    t = threading.Thread(target=serve_fail)
    t.start()
    with pytest.raises(ConnectFailed, match="TLS"):
        connect("localhost", port, ssl_context=ssl.create_default_context(), timeout=5.0)
    t.join()
    srv.close()


def test_pipelined_tcp_sends_do_not_deadlock():
    """Both sides send 16 MiB before reading: fine on a pipelined (background-writer) channel."""
    a, b = _pair_tcp()
    assert a.pipelined and b.pipelined
    x = np.arange(2 << 20, dtype=np.uint64)
    out: dict = {}

    def side(name, ch):
        ch.send_array(x.copy(), owned=True)
        out[name] = ch.recv_array(np.uint64, x.shape)

    ts = [threading.Thread(target=side, args=("a", a)), threading.Thread(target=side, args=("b", b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not any(t.is_alive() for t in ts)
    assert np.array_equal(out["a"], x) and np.array_equal(out["b"], x)
    a.close()
    b.close()


def _send_and_exit(port: int) -> None:
    ch = connect("127.0.0.1", port, channel_timeout=20.0)
    ch.send_array(np.arange(1 << 20, dtype=np.uint64), owned=True)  # queued, then exit: no close()


def test_queued_frames_are_delivered_at_exit():
    srv = listen()
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_send_and_exit, args=(srv.getsockname()[1],))
    proc.start()
    ch = TCPChannel.accept(srv, timeout=30.0)
    got = ch.recv_array(np.uint64, (1 << 20,))
    assert np.array_equal(got, np.arange(1 << 20, dtype=np.uint64))
    proc.join(20)
    ch.close()
    srv.close()


def test_corked_sends_leave_in_one_write_with_the_same_bytes():
    """Messages sent inside ``corked()`` reach the peer unchanged and in order, through one
    ``sendall`` (one segment), and the byte counters match separate sends."""
    srv, cli = _pair_tcp()
    writes: list[int] = []
    real = cli._sendall

    def counting(parts):
        writes.append(sum(len(memoryview(p).cast("B")) for p in parts))
        return real(parts)

    cli._sendall = counting  # the channel's one path to the socket (small writes: one sendall each)
    buf = bytearray(b"reused")
    with cli.corked():
        cli.send_json({"ready": True})
        cli.send(bytes(buf))
        buf[:] = b"XXXXXX"  # a held frame is a copy: changing the caller's buffer changes nothing sent
        cli.send_array(np.arange(5, dtype=np.int64))
        assert writes == []  # held until the block ends
    assert len(writes) == 1
    assert srv.recv_json() == {"ready": True}
    assert srv.recv() == b"reused"
    assert srv.recv_array().tolist() == [0, 1, 2, 3, 4]
    assert cli.bytes_sent == srv.bytes_received == writes[0]
    cli.send(b"after")  # outside the block: written at once again
    assert len(writes) == 2 and srv.recv() == b"after"
    srv.close()
    cli.close()
