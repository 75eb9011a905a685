"""``secureml serve``: the model owner's double-blind prediction server."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a trained KRR model for double-blind prediction (model owner)",
        description="Serve a model file over TCP. Clients learn predictions only; the server learns "
        "nothing about the queries. One line is logged per session (peer, cost), never any data.",
    )
    p.add_argument("--model", required=True, help="model file written by `secureml train`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7000, help="TCP port (0: pick a free one and print it)")
    p.add_argument("--frac-bits", type=int, default=None,
                   help="fixed-point fractional bits of representations (default: the most that fit, <= 16)")
    p.add_argument("--max-sessions", type=int, default=None, help="stop after this many sessions")
    p.add_argument("--concurrency", type=int, default=2, help="sessions served at once")
    p.add_argument("--tls-cert", default=None, help="PEM certificate: serve over TLS")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument("--no-resume", action="store_true",
                   help="compact models: refuse OT-session resumption (every session runs its base OTs; "
                   "the server then keeps no per-client OT state and cannot link a client's sessions)")
    p.add_argument("--precompute-ot", action="store_true",
                   help="compact models: extend the OTs before the online phase and report it apart "
                   "(default: within the online phase, one pipelined pass)")
    g = p.add_argument_group(
        "defenses", "output defenses applied inside the protocol (the client learns only the defended "
        "answer; the mechanism is announced to it) and per-client query limits; docs/defenses.md")
    g.add_argument("--round-to", type=float, default=None, metavar="KCAL",
                   help="round every answer half up to this grid (snapped to a power of two: 1, 0.5, "
                   "1/128 ...; kcal/mol for energies)")
    g.add_argument("--noise", type=float, default=0.0, metavar="SD",
                   help="add fresh Gaussian noise of this standard deviation to every answer (before "
                   "rounding). Fresh noise averages out over repeated queries: pair it with --budget")
    g.add_argument("--budget", type=int, default=None, metavar="N",
                   help="lifetime query budget per client (answers), kept in --ledger across sessions "
                   "and restarts; clients are identified by certificate or token, else by IP address")
    g.add_argument("--rate", type=float, default=None, metavar="PER_MIN",
                   help="rate limit per client: answers per minute (token bucket, burst of one minute)")
    g.add_argument("--ledger", default="secureml-ledger.sqlite",
                   help="SQLite file of per-client query counts (default ./secureml-ledger.sqlite)")
    p.set_defaults(func=run)


def output_defense(args: argparse.Namespace) -> dict:
    """The protocol's public ``output_defense`` parameters from --round-to / --noise."""
    from protocols.krr.defense import OutputDefense

    return OutputDefense.from_options(round_to=args.round_to, noise=args.noise).to_dict()


def query_ledger(args: argparse.Namespace):
    """The per-client ledger from --budget / --rate / --ledger, or None when neither is set."""
    if args.budget is None and args.rate is None:
        return None
    from secureml.serving.ledger import QueryLedger

    return QueryLedger(args.ledger, budget=args.budget, rate=args.rate)


def run(args: argparse.Namespace) -> int:
    import logging
    import ssl

    from protocols.krr import ServedModel, serve

    logging.getLogger("secureml.serve").setLevel(logging.WARNING)
    model = ServedModel.from_file(args.model, frac_bits=args.frac_bits)
    model.resume_ot = not args.no_resume
    model.precompute_ot = bool(args.precompute_ot)
    model.set_defense(args.round_to, args.noise)  # public: announced in the handshake
    ledger = query_ledger(args)
    extra = {}
    if ledger is not None:
        import inspect

        from secureml.errors import SecureMLError
        from secureml.serving.ledger import admit_hook

        if "admit" not in inspect.signature(serve).parameters:
            raise SecureMLError("query budgets need the server's admission hook, which this build lacks")
        extra["admit"] = admit_hook(ledger)
    if model.public.output_defense:
        from protocols.krr.defense import OutputDefense

        print(f"secureml: output defense: {OutputDefense.from_dict(model.public.output_defense).describe()}",
              flush=True)
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    try:
        serve(model, args.host, args.port, ssl_context=ctx, max_sessions=args.max_sessions,
              concurrency=args.concurrency, **extra)
    except KeyboardInterrupt:
        return 0
    return 0
