"""Session opening of double-blind KRR: hello, version check, public parameters, ready/abort.

Steps (one TCP connection, one or more queries):
  1. client -> server: hello {protocol, version, n_queries}
  2. server -> client: {ok, params} (the :class:`PublicParams`) or {ok: false, error}
     with ``keep_alive: true`` when the client asked to keep the connection and the server will
     (:mod:`protocols.net.frontdoor`, step 8: the client's next session starts with step 1 on it)
  3. client -> server: {ready: true, need_public_model} once its queries encode within the public
     bounds, or {abort: "query-rejected"} (nothing private has been exchanged yet). The abort is
     a fixed code: why a query was rejected names the query (a SMILES, a file name), so it never
     leaves the client, and the server never logs what a client sent.
After step 3 the model kind's protocol (:mod:`protocols.krr.registry`) takes over.
Early data (resumed semi-honest compact sessions, :func:`protocols.krr.client.predict`): a client
holding the parameters of an earlier session sends steps 1 and 3 and its first protocol message
in one flight; its step 3 carries the parameters' digest, and a server whose parameters differ
refuses the session before reading further (the client then starts over without early data).
A server in client-malicious mode (docs/malicious.md) refuses, in step 2, a model kind that has no
client-malicious protocol (the exact kernels, today) instead of running a weaker one.
"""
from __future__ import annotations

import hashlib
import json
import logging

from typing import Any, Callable

from protocols.common import check_hello, send_hello
from protocols.krr.params import (ABORT_CODE, CLIENT_MALICIOUS_KINDS, PROTOCOL_NAME, PROTOCOL_VERSION,
                                  PublicParams)
from protocols.net.transport import Channel
from secureml.errors import ProtocolError

_log = logging.getLogger("secureml.serve")

#: most queries one session may ask for (the hello names the number; more are refused)
MAX_QUERIES_PER_SESSION = 256
#: the server's own (fixed) descriptions of a client's abort: safe to log
CLIENT_REJECTED = "client rejected its query"


class QueryRejected(ProtocolError):
    """The client rejected its own query (fixed code, never why); the front door logs this class."""
CLIENT_MALFORMED = "client sent a malformed ready message"
#: the server's fixed wording when a client's early data was made for other public parameters
STALE_PARAMS = "refused: the client's cached public parameters are stale"


def params_digest(params: dict[str, Any]) -> str:
    """SHA-256 of the public parameters as the server sends them (canonical JSON)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def refusal(public: PublicParams) -> str | None:
    """Why this server refuses every session (a mode its model kind has no protocol for), or None."""
    if public.security == "client-malicious" and public.kind not in CLIENT_MALICIOUS_KINDS:
        return (f"this model ({public.kind}) has no client-malicious protocol yet: its owner can serve it "
                "with --security semi-honest (docs/malicious.md)")
    return None


def server_handshake(ch: Channel, public: PublicParams, hello: dict[str, Any] | None = None,
                     after_params: Callable[[dict[str, Any]], None] | None = None,
                     keep_alive: bool = False) -> tuple[int, dict[str, Any]]:
    """Model owner's steps 1-3: returns (number of queries, the client's ready message).

    ``hello``: step 1's message when the server's front door has already read it.
    ``after_params(hello)``: called once step 2 is on its way and before step 3 is read -- work
    that needs only the hello runs while the client computes its features (the lattice path's
    query-independent half of the reply, :func:`protocols.krr.linear_he.server_early`).
    ``keep_alive``: the server keeps this connection for the client's next session (its front
    door decided, :mod:`protocols.net.frontdoor` step 8); step 2 says so.
    """
    if hello is None:
        hello = ch.recv_json(max_bytes=4096)
    try:
        k = check_hello(hello, PROTOCOL_NAME, PROTOCOL_VERSION, MAX_QUERIES_PER_SESSION)
    except ProtocolError as exc:
        ch.send_json({"ok": False, "error": str(exc)})
        raise
    refused = refusal(public)
    if refused:
        ch.send_json({"ok": False, "error": refused})
        # the server's own words about its own model (nothing the client sent), for its operator
        _log.warning("session refused: no client-malicious protocol for %s", public.kind)
        raise ProtocolError(f"refused: no client-malicious protocol for {public.kind}")
    params = public.to_dict()
    ch.send_json({"ok": True, "params": params, "keep_alive": True} if keep_alive else {"ok": True, "params": params})
    if after_params is not None:
        after_params(hello)
    digest = params_digest(params)  # before the read: the client is still busy
    answer = ch.recv_json(max_bytes=4096)
    if not isinstance(answer, dict) or not answer.get("ready"):
        # never quote the reply: a client's reason could name its molecule
        if isinstance(answer, dict) and answer.get("abort") == ABORT_CODE:
            raise QueryRejected(CLIENT_REJECTED)
        raise ProtocolError(CLIENT_MALFORMED)
    if "params_sha256" in answer and answer["params_sha256"] != digest:
        # a client that sent its queries with the hello (cached parameters) used other parameters:
        # nothing it sent after the hello may be answered
        raise ProtocolError(STALE_PARAMS)
    return k, answer


def client_hello_message(n_queries: int, token: str | None = None, keep_alive: bool = False) -> dict[str, Any]:
    """Step 1's message (with the client's bearer token, if it has one). ``keep_alive``: ask the
    server to keep the connection for this client's next session (step 2 answers whether it will)."""
    hello: dict[str, Any] = {"protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION, "n_queries": int(n_queries)}
    if token:
        hello["token"] = token
    if keep_alive:
        hello["keep_alive"] = True
    return hello


def client_hello(ch: Channel, n_queries: int) -> PublicParams:
    """Query owner's steps 1-2: the served model's public parameters."""
    return PublicParams.from_dict(send_hello(ch, PROTOCOL_NAME, PROTOCOL_VERSION, n_queries))


def client_ready(ch: Channel, need_public_model: bool = False, params_sha256: str | None = None) -> None:
    """Query owner's step 3 (success): the queries fit; ask for the public model if not cached.
    ``params_sha256``: the digest of the parameters the client used (sent when it sends its
    queries with the hello, before reading the server's parameters); the server refuses a mismatch."""
    msg: dict[str, Any] = {"ready": True, "need_public_model": bool(need_public_model)}
    if params_sha256 is not None:
        msg["params_sha256"] = params_sha256
    ch.send_json(msg)


def client_abort(ch: Channel) -> None:
    """Query owner's step 3 (failure): the fixed code, never the reason (it names the query)."""
    ch.send_json({"abort": ABORT_CODE})
