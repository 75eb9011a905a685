"""``secureml serve``: the model owner's double-blind prediction server."""
from __future__ import annotations

import argparse
import sys


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
    p.add_argument("--security", choices=("auto", "client-malicious", "semi-honest"), default="auto",
                   help="client-malicious: whatever a client sends, each query yields at most the prediction "
                   "for one input of the public domain, or an abort (compact models; exact-kernel models have "
                   "no such protocol yet and their sessions are refused); semi-honest: the protocols for "
                   "clients that run our code unmodified; auto (default): client-malicious where the model "
                   "kind has it, else semi-honest with a warning at start-up (docs/malicious.md)")
    p.add_argument("--precompute-ot", action="store_true",
                   help="compact models: extend the OTs before the online phase and report it apart "
                   "(default: within the online phase, one pipelined pass)")
    p.add_argument("--cross-term", choices=("auto", "he", "ot"), default="auto",
                   help="Gaussian kernel: how X q is computed -- 'he' lattice HE (BFV, ~9 MB at N = 16,384, "
                   "semi-honest clients only; needs TenSEAL, in secureml[full]) or 'ot' the OT vector OLE "
                   "(exact, ~850 MB); 'auto': 'he' where TenSEAL is installed, else 'ot'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import ssl

    from protocols.krr import ServedModel, serve

    logging.getLogger("secureml.serve").setLevel(logging.INFO)  # one line per session, never any data
    security = None if args.security == "auto" else args.security
    model = ServedModel.from_file(args.model, frac_bits=args.frac_bits, security=security)
    if model.public.security != "client-malicious":
        print(f"warning: {model.public.kind} is served semi-honest: a client that modifies its code can "
              "learn more than its predictions (the training weights); serve a compact model for "
              "client-malicious security (docs/malicious.md)", file=sys.stderr)
    if model.public.kind == "krr-gaussian":
        from protocols.krr import gaussian

        model.public.cross_term = _cross_term(args.cross_term)
        model.public.validate()
        # query-independent set-up before the first client (encoding, NTT plaintexts of the rows)
        gaussian.prepare_server(model.params, model.public)
    model.resume_ot = not args.no_resume
    model.precompute_ot = bool(args.precompute_ot)
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    try:
        serve(model, args.host, args.port, ssl_context=ctx, max_sessions=args.max_sessions,
              concurrency=args.concurrency)
    except KeyboardInterrupt:
        return 0
    return 0


def _cross_term(choice: str) -> str:
    """'auto' picks the lattice cross term where TenSEAL is installed (the light install has none)."""
    if choice != "auto":
        return choice
    import importlib.util

    try:
        return "he" if importlib.util.find_spec("tenseal") is not None else "ot"
    except ImportError:  # an import hook that refuses the package counts as "not installed"
        return "ot"
