"""Helpers for running both parties of a protocol in one process (tests, notebooks, docs).

:func:`run_two_party` runs ``fn0(Party(role 0))`` and ``fn1(Party(role 1))`` in two threads over
an in-process channel pair (framed and counted exactly like TCP) and returns both results.
Not for production use: both parties live in the same process and trust each other's memory.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from protocols.krr import predict_features, serve_one
from protocols.mpc.party import Party, ProviderFactory
from protocols.mpc.providers import TrustedDealerProviderForTests
from protocols.net.transport import PeerDisconnected, local_channel_pair


class TwoPartyResult(tuple):
    """``(result0, result1)`` plus the two parties (for traffic counters and transcripts)."""

    parties: tuple[Party, Party]


def run_two_party(
    fn0: Callable[[Party], Any],
    fn1: Callable[[Party], Any],
    *,
    seed: int | None = None,
    timeout: float = 60.0,
    record: bool = False,
    setup: Callable[[Party], None] | None = None,
    provider: ProviderFactory | None = None,
) -> TwoPartyResult:
    """Run ``fn0`` as party 0 and ``fn1`` as party 1 concurrently; return ``(r0, r1)``.

    ``seed`` makes both parties' randomness reproducible (insecure, tests only); ``record``
    starts a raw-frame transcript on both channels (``result.parties[i].ch.transcript``);
    ``provider`` builds each party's correlation provider (default: OT-based; :func:`dealer_provider`
    for fast unit tests); ``setup`` is called on each party before its function.
    If one side raises, its channel is closed so the other side fails promptly instead of
    waiting for the timeout; the first exception is re-raised.
    """
    c0, c1 = local_channel_pair(timeout=timeout)
    if record:
        c0.record()
        c1.record()
    parties = (
        Party(c0, 0, seed=seed, provider=provider),
        Party(c1, 1, seed=seed, provider=provider),
    )
    results: list[Any] = [None, None]
    errors: list[BaseException | None] = [None, None]

    def body(i: int, fn: Callable[[Party], Any]) -> None:
        try:
            if setup is not None:
                setup(parties[i])
            results[i] = fn(parties[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors[i] = exc
            parties[i].ch.close()

    threads = [
        threading.Thread(target=body, args=(i, fn), daemon=True, name=f"party{i}")
        for i, fn in enumerate((fn0, fn1))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30.0)
    if any(t.is_alive() for t in threads):
        c0.close()
        c1.close()
        raise TimeoutError("two-party run did not finish")
    # Prefer the error that happened first (the other side's is usually PeerDisconnected).
    real = [e for e in errors if e is not None and not isinstance(e, PeerDisconnected)]
    if real:
        raise real[0]
    if errors[0] is not None or errors[1] is not None:
        raise errors[0] if errors[0] is not None else errors[1]  # type: ignore[misc]
    out = TwoPartyResult((results[0], results[1]))
    out.parties = parties
    return out


def checked_ot(p: Party) -> None:
    """Client-malicious OT for a party of :func:`run_two_party`: every OT-extension piece in which
    the client (role 1, the receiver) chooses is consistency-checked, as a client-malicious session's;
    and, as there (protocols.krr.registry._setup_exact_ot), the other direction's one-block outputs keep
    the TCCR hash (``tccr_hash``; protocol 39). Both directions are set up here, in
    :meth:`~protocols.mpc.providers.CorrelationProvider.setup_ot`'s order (role 0's sender first)."""
    p.setup_ot()  # no-op for engines installed or made before
    if p.role == 0:
        p.ot_sender.checked = True
    else:
        p.ot_receiver.checked = True
    p.ot_sender.tccr_hash = p.ot_receiver.tccr_hash = True


def dealer_provider(seed: int = 1234) -> ProviderFactory:
    """A ``provider`` for :func:`run_two_party` / :class:`Party`: the (insecure, tests-only)
    :class:`~protocols.mpc.providers.TrustedDealerProviderForTests`, same seed on both sides."""

    def make(p: Party) -> TrustedDealerProviderForTests:
        return TrustedDealerProviderForTests(p, seed=seed, enable=True)

    return make




def serve_one_in_thread(served: Any, ch: Any, party: Any = None) -> tuple[threading.Thread, dict[str, Any]]:
    """``serve_one(served, ch)`` in a started daemon thread; the box receives the server's ``cost``
    or the ``error`` it raised (the channel is then closed, so the client sees the session end)."""
    box: dict[str, Any] = {}

    def server() -> None:
        try:
            box["cost"] = serve_one(served, ch, party=party)
        except Exception as exc:  # noqa: BLE001 - handed to the caller in the box
            box["error"] = exc
            ch.close()

    t = threading.Thread(target=server, daemon=True)
    t.start()
    return t, box


def run_krr_session(served: Any, Q: Any = None, *, record: bool = False, timeout: float = 60.0,
                    counts: Any = None, featurize: Any = None, seed: int | None = None) -> tuple:
    """One double-blind KRR session in-process: ``serve_one(served)`` in a thread, the client here.

    Returns ``(predictions, client cost, public params, client channel, server box)``; the box holds
    the server's ``cost`` or the ``error`` it raised (the client's own errors propagate).
    ``record`` keeps the client channel's raw transcript (``channel.transcript``); ``seed`` makes
    both parties' randomness reproducible (insecure: statistical tests use it so that they cannot
    fail by chance on one run in a thousand).
    """
    c0, c1 = local_channel_pair(timeout=timeout)
    if record:
        c0.record()
        c1.record()
    p0 = None if seed is None else Party(c0, 0, seed=seed)
    p1 = None if seed is None else Party(c1, 1, seed=seed + 1)
    t, box = serve_one_in_thread(served, c0, party=p0)
    try:
        preds, cost, pp = predict_features(c1, Q, featurize, counts=counts, party=p1)
    finally:
        t.join(timeout / 2)
    return preds, cost, pp, c1, box


def secrets_in_transcript(transcript: list[tuple[str, bytes]], secrets: Any, nbytes: int = 8) -> list[int]:
    """The secrets (integers) whose ``nbytes``-byte little-endian encoding appears in any frame."""
    blob = b"".join(frame for _, frame in transcript)
    return [int(s) for s in secrets if int(s).to_bytes(nbytes, "little") in blob]


def view_independence_pvalue(transcripts: list[list[tuple[str, bytes]]], min_frame: int = 4096) -> float:
    """Chi-square p-value that the received bytes of several sessions follow one distribution.

    Each transcript's large received frames (``min_frame`` bytes or more: the protocol's masked
    payloads, not headers) are histogrammed by byte value; a view that depends on the private
    input shows up as different histograms (small p).
    """
    import numpy as np
    from scipy import stats

    views = []
    for tr in transcripts:
        data = b"".join(f for d, f in tr if d == "recv" and len(f) >= min_frame)
        views.append(np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256))
    n = min(v.sum() for v in views)
    table = np.vstack([v * (n / v.sum()) for v in views])
    return float(stats.chi2_contingency(table)[1])


def transcript_arrays(transcript: list[tuple[str, bytes]], direction: str = "send") -> list:
    """The numpy arrays carried by single-frame array messages of a recorded transcript.

    Used by privacy tests to look at exactly what a party sent.  Sent frames are recorded
    whole; received frames are recorded in pieces (header, body), so read a party's view from
    the *peer's* "send" entries.
    """
    import numpy as np

    out = []
    for d, frame in transcript:
        if d != direction or len(frame) < 4 or frame[:2] != b"\x93A":
            continue
        dlen = frame[2]
        dtype = np.dtype(frame[3 : 3 + dlen].decode("ascii"))
        ndim = frame[3 + dlen]
        start = 4 + dlen + 8 * ndim
        shape = tuple(int.from_bytes(frame[4 + dlen + 8 * i : 12 + dlen + 8 * i], "little") for i in range(ndim))
        body = frame[start:]
        if len(body) == int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            out.append(np.frombuffer(body, dtype=dtype).reshape(shape))
    return out
