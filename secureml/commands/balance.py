"""``secureml balance``: a sticky TCP load balancer in front of several `secureml serve` machines."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "balance",
        help="TCP load balancer for several servers (sticky by client IP; for tests and small setups)",
        description="Relays TCP connections to --backend servers, choosing by client IP address "
        "(rendezvous hashing) so resumable OT sessions return to the server holding their ticket; "
        "an unreachable server is skipped. TLS passes through. For production prefer HAProxy or "
        "nginx (see docs/serving.md).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7000, help="TCP port (0: pick one and print it)")
    p.add_argument("--backend", action="append", required=True, metavar="HOST:PORT",
                   help="a `secureml serve` address (repeat for each server)")
    p.add_argument("--round-robin", action="store_true", help="spread connections instead of sticky routing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from protocols.krr.client import parse_address
    from protocols.net.balancer import Balancer

    backends = [parse_address(b) for b in args.backend]
    bal = Balancer((args.host, args.port), backends, sticky=not args.round_robin)
    print(f"secureml: balancing {len(backends)} servers on {args.host}:{bal.port}", flush=True)
    try:
        bal.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        bal.stop()
    return 0
