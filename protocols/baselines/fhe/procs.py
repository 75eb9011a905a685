"""Run a model owner and a query owner as two real processes over TCP loopback.

Shared by the baseline engines (FHE, CrypTen, generic MPC) for their ``run_local``: both parties
are started with the ``spawn`` method (fresh interpreters: no state or memory is shared, and each
process's peak RSS is its own), the server listens on an ephemeral port, the client connects, and
each side sends its result back to the parent through a pipe. Any exception in a child is
re-raised in the parent with the child's traceback text.
"""
from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any, Callable

from protocols.net.transport import connect, listen, TCPChannel
from secureml.errors import ProtocolError

# (server_fn, server_args) and (client_fn, client_args) are module-level functions (picklable):
# server_fn(ch, *server_args) -> Any ; client_fn(ch, *client_args) -> Any


def _send_error(conn: Any, exc: BaseException) -> None:
    text = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    try:
        conn.send(("error", text, exc))
    except Exception:  # the exception itself does not pickle: send its text only
        conn.send(("error", text))


def _server_main(conn: Any, fn: Callable[..., Any], args: tuple, timeout: float) -> None:
    try:
        srv = listen("127.0.0.1", 0)
        conn.send(("port", srv.getsockname()[1]))
        srv.settimeout(timeout)
        sock, _ = srv.accept()
        srv.close()
        ch = TCPChannel(sock, timeout=timeout)
        try:
            out = fn(ch, *args)
        finally:
            ch.close()
        conn.send(("ok", out))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        _send_error(conn, exc)
    finally:
        conn.close()


def _client_main(conn: Any, port: int, fn: Callable[..., Any], args: tuple, timeout: float) -> None:
    try:
        ch = connect("127.0.0.1", port, timeout=timeout, channel_timeout=timeout)
        try:
            out = fn(ch, *args)
        finally:
            ch.close()
        conn.send(("ok", out))
    except BaseException as exc:  # noqa: BLE001
        _send_error(conn, exc)
    finally:
        conn.close()


def _get(conn: Any, proc: Any, who: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        proc.terminate()
        raise ProtocolError(f"{who} process gave no answer within {timeout:.0f} s")
    try:
        msg = conn.recv()
    except EOFError:
        raise ProtocolError(f"{who} process died (exit code {proc.exitcode})") from None
    if msg[0] == "error":
        exc = msg[2] if len(msg) > 2 else None
        if isinstance(exc, Exception):
            raise exc
        raise ProtocolError(f"{who} process failed: {msg[1]}")
    return msg[1]


def run_pair(
    server_fn: Callable[..., Any],
    server_args: tuple,
    client_fn: Callable[..., Any],
    client_args: tuple,
    timeout: float = 600.0,
    relay: Callable[[int], tuple[int, Callable[[], None]]] | None = None,
) -> tuple[Any, Any]:
    """Run both parties in two spawned processes; return (server result, client result).

    ``relay(port) -> (port', close)`` puts something between them (an emulated network link,
    ``bench/netem.py``): the client connects to port' instead; ``close`` is called at the end.
    """
    ctx = mp.get_context("spawn")
    s_parent, s_child = ctx.Pipe(duplex=False)
    c_parent, c_child = ctx.Pipe(duplex=False)
    sp = ctx.Process(target=_server_main, args=(s_child, server_fn, server_args, timeout), daemon=True)
    sp.start()
    s_child.close()
    cp = None
    close_relay = None
    try:
        port = _get(s_parent, sp, "server", 120.0)  # the payload of ("port", n)
        if relay is not None:
            port, close_relay = relay(port)
        cp = ctx.Process(target=_client_main, args=(c_child, port, client_fn, client_args, timeout), daemon=True)
        cp.start()
        c_child.close()
        try:
            client_out = _get(c_parent, cp, "client", timeout)
        except ProtocolError:
            # the client only saw the connection drop: the server's own error says why
            if s_parent.poll(30):
                _get(s_parent, sp, "server", 1)
            raise
        server_out = _get(s_parent, sp, "server", timeout)
        return server_out, client_out
    finally:
        if close_relay is not None:
            close_relay()
        for p in (sp, cp):
            if p is not None:
                p.join(timeout=10)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)


def _engine_server(ch: Any, module: str, model: Any, opts: dict) -> Any:
    import importlib

    return importlib.import_module(module).serve_one(model, ch, **opts)


def _engine_client(ch: Any, module: str, queries: Any) -> Any:
    import importlib

    return importlib.import_module(module).predict(ch, queries)


def run_engine_local(module: str, model: Any, queries: Any, timeout: float = 3600.0,
                     relay: Callable[[int], tuple[int, Callable[[], None]]] | None = None, **opts: Any):
    """Run engine ``module``'s ``serve_one``/``predict`` as two spawned processes over TCP
    loopback (or through ``relay``, see :func:`run_pair`): (predictions, client cost, server cost)."""
    import numpy as np

    server_cost, (pred, client_cost) = run_pair(
        _engine_server, (module, model, dict(opts)), _engine_client,
        (module, np.asarray(queries, dtype=np.float64)), timeout=timeout, relay=relay,
    )
    return pred, client_cost, server_cost
