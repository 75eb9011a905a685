"""``secureml serve``: the model owner's double-blind prediction server."""
from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a trained KRR model for double-blind prediction (model owner)",
        description="Serve a model file over TCP. Clients learn predictions only (client-malicious, the "
        "default: whatever they send; with --laplacian-chain unbound up to one bit per aborted Laplacian session, "
        "--max-aborts; "
        "semi-honest: if they run our code unmodified); the server learns nothing about the queries. One line is logged per session (peer, identity, cost), never any "
        "data. Idle and slow connections are cut at the handshake deadline and never hold a session "
        "slot; see docs/serving.md for exposing a server (TLS, client identity, workers, balancers).",
    )
    p.add_argument("--model", required=True, help="model file written by `secureml train`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7000, help="TCP port (0: pick a free one and print it)")
    p.add_argument("--frac-bits", type=int, default=None,
                   help="fixed-point fractional bits of representations (default: the most that fit, <= 16)")
    p.add_argument("--max-sessions", type=int, default=None, help="stop after this many sessions")
    p.add_argument("--concurrency", type=int, default=2, help="sessions served at once per worker (default 2)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the port (default 1; use the number of cores)")
    g = p.add_argument_group("TLS and client identity")
    g.add_argument("--tls-cert", default=None, help="PEM certificate: serve over TLS (`secureml keys server`)")
    g.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    g.add_argument("--client-ca", default=None,
                   help="require client certificates signed by this CA (mutual TLS; `secureml keys ca/client`); "
                   "the certificate's name is the client's identity")
    g.add_argument("--tokens", default=None,
                   help="require a bearer token listed (as a hash) in this file (`secureml keys token`)")
    g.add_argument("--verify-key", default=None,
                   help="Ed25519 public key: refuse a model file not signed by it (`secureml keys signing`)")
    g.add_argument("--audit-log", default=None, help="append one JSON line per session here (no client text)")
    g = p.add_argument_group("limits (denial of service)")
    g.add_argument("--handshake-timeout", type=float, default=10.0,
                   help="TLS handshake + hello must arrive within this many seconds (default 10)")
    g.add_argument("--idle-timeout", type=float, default=60.0,
                   help="a read may wait this long for the peer to start sending (default 60 s)")
    g.add_argument("--min-rate", type=float, default=64 * 1024,
                   help="then it must progress at this many bytes/s (default 65536)")
    g.add_argument("--max-queue", type=int, default=16,
                   help="admitted sessions waiting for a slot (up to 5 s); more get 'busy, retry after' (default 16)")
    g.add_argument("--max-pending", type=int, default=512,
                   help="connections before their hello; more are closed at once (default 512)")
    g.add_argument("--keep-alive", action=argparse.BooleanOptionalAction, default=True,
                   help="keep a client's connection for its next session when its hello asks (idle at most "
                   "--idle-timeout, holding no session slot; every session admitted and audited as on a new "
                   "connection) (default: on)")
    g.add_argument("--max-idle", type=int, default=256,
                   help="kept-alive connections idle at once; more are closed when their session ends (default 256)")
    g.add_argument("--max-per-client", type=int, default=4, metavar="N",
                   help="entries one client identity (certificate or token, else IP address) may hold in each store "
                   "of resumable state -- OT-session tickets, lattice keys, prepared re-randomisations, kept-alive "
                   "connections; one more evicts that client's own least recently used entry, never another "
                   "client's, so a client opening many sessions cannot push others out of the stores "
                   "(docs/serving.md); per worker; 0: no per-client bound, only the stores' caps (default 4)")
    g.add_argument("--max-sessions-per-client", type=int, default=2, metavar="N",
                   help="sessions one client identity (certificate or token, else IP address: clients behind one "
                   "NAT or balancer share it) may have admitted at once, running or queued; one more waits (no queue "
                   "place) up to 5 s for one of them to end, then is answered 'busy, retry after', so one client opening many connections cannot take every slot and queue "
                   "place from the others (docs/serving.md); per worker; 0: no per-client bound (default 2)")
    p.add_argument("--no-resume", action="store_true",
                   help="compact models: refuse OT-session resumption (every session runs its base OTs; "
                   "the server then keeps no per-client OT state and cannot link a client's sessions; "
                   "semi-honest lattice path: it keeps no client public keys, asked for in every session)")
    p.add_argument("--security", choices=("client-malicious", "semi-honest", "auto"), default="client-malicious",
                   help="client-malicious (default): whatever a client sends, each query yields at most the "
                   "prediction for one input of the public domain (exact kernels: plus the server's fresh flooding below the "
                   "output's last kept bit), or an abort (compact, Gaussian- and Laplacian-kernel "
                   "models; the Gaussian one runs the checked lattice cross term or, with --cross-term ot, the OT "
                   "one; the Laplacian one commits and checks its comparison chain, or with --laplacian-chain unbound leaks at "
                   "most one bit per aborted session, bounded by --max-aborts; --noise "
                   "works, --round-to not yet); semi-honest: the cheaper protocols for clients that run our code "
                   "unmodified (a modified client can extract the weights; compact models then use the lattice "
                   "inner product, docs/compact-models.md); auto: client-malicious where the model kind and "
                   "options have a protocol, else semi-honest with a warning (docs/malicious.md)")
    p.add_argument("--compact-corrections", choices=("exact", "rounded"), default="exact",
                   help="compact models, client-malicious: the pooled COT corrections of resumed sessions -- 'exact' "
                   "(default: the prediction for the client's phi' exactly) or 'rounded' (each correction drops "
                   "its low bits below the public error budget: 25-30%% fewer bytes, the prediction plus a centred error "
                   "independent of the weights, within the fixed-point plan's tolerance; docs/compact-models.md)")
    p.add_argument("--compact-precorrect", action="store_true",
                   help="compact models, client-malicious: the OT-pool refill after each reply also sends the next "
                   "session's corrections, so a resumed session sends only one bit per OT online (RFF: ~12 kB instead "
                   "of ~450 kB to the prediction); the bytes per session are the same, moved after the previous reply "
                   "(docs/compact-models.md)")
    p.add_argument("--precompute-ot", action="store_true",
                   help="compact models: extend the OTs before the online phase and report it apart "
                   "(default: within the online phase, one pipelined pass)")
    p.add_argument("--ot-engine", choices=("auto", "softspoken", "silent"), default="auto",
                   help="Laplacian kernel: the OT extension of its comparisons -- 'silent' (LPN-based: at N = 16,384, "
                   "d = 351, 99.7 MB against 249.1 MB and ~1.6x the loopback wall time, docs/malicious/p32/final: for slow "
                   "links) or 'softspoken' (faster on a LAN); 'auto' (default): silent from 2^16 training entries (N x d), "
                   "softspoken below (docs/ot-engine.md); client-malicious sessions take the same engine, checked where "
                   "the client chooses (protocol 32: 215.6 MB against 368.3 MB at N = 16,384, docs/malicious/p32/final)")
    p.add_argument("--laplacian-chain", choices=("bound", "unbound"), default="bound",
                   help="Laplacian kernel, client-malicious: 'bound' (default) commits and checks every value the client "
                   "feeds the comparison chain, so no abort depends on the training data; 'unbound' runs the "
                   "semi-honest chain and checks its result afterwards -- cheaper, but whether a deviating client's "
                   "session aborts can tell it one bit about the training data, bounded by --max-aborts "
                   "(docs/malicious.md)")
    p.add_argument("--inner-product", choices=("auto", "he", "ot"), default="auto",
                   help="exact kernels, semi-honest: step 9's inner product in Z_2^128 -- 'he' lattice HE (one "
                   "RLWE ciphertext each way, ~1.4 MB whatever N up to 16,384) or 'ot' Gilboa products over random "
                   "OT (~0.7 kB per training point); 'auto' (default): fewer bytes for the model's N (the lattice "
                   "from N ~ 930 on for the Gaussian, ~1,270 for the Laplacian on silent OT, at bench/krr_cost.py's d = 351; docs/double-blind.md). The client-malicious "
                   "protocols have their own step")
    p.add_argument("--cross-term", choices=("auto", "he", "ot"), default="auto",
                   help="Gaussian kernel: how X q is computed -- 'he' lattice HE (semi-honest: SEAL's BFV, ~9 MB at "
                   "N = 16,384, needs TenSEAL, in secureml[full]; client-malicious: the checked numpy lattice "
                   "cross term, the client's ciphertexts proven well formed) or 'ot' the OT vector OLE "
                   "(exact, ~850 MB); 'auto' (default): semi-honest, 'he' where TenSEAL is installed, else "
                   "'ot'; client-malicious, the one with fewer estimated bytes per query (the checked lattice "
                   "cross term has a ~6 MB floor, so 'ot' up to N = 150 at d = 351; printed at start-up). Compact models with --security semi-honest: the lattice "
                   "inner product (one RLWE ciphertext each way, numpy only) unless 'ot'")
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
    g.add_argument("--max-aborts", type=int, default=3, metavar="N",
                   help="refuse a client after N failed protocol checks (client-malicious sessions: with --laplacian-chain "
                   "unbound, whether a deviating client's Laplacian session aborts can tell it one bit about the "
                   "training data; a "
                   "failed OT check one guessed key bit; sessions in progress count as possible aborts, the excess answered "
                   "'busy' and retried); counted per client identity, else IP address (in the "
                   "--ledger file when --budget or --rate is set, kept across restarts; else in memory, or in a temporary "
                   "file all --workers share); 0: no limit (default 3)")
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

    from protocols.krr import serve
    from protocols.net import pki
    from protocols.net.frontdoor import AuditLog, Authenticator, load_tokens
    from protocols.net.limits import Limits
    from secureml.errors import SecureMLError

    # normal sessions are logged at INFO, and a server shows them by default (never any data)
    logging.getLogger("secureml.serve").setLevel(logging.INFO if args.verbose < 2 else logging.DEBUG)
    if args.client_ca and not args.tls_cert:
        raise SecureMLError("--client-ca needs --tls-cert/--tls-key (client certificates are checked in TLS)")
    verify_key = None
    if args.verify_key:
        from secureml.models.signing import load_public_key

        verify_key = load_public_key(args.verify_key)
    model = _load(args, verify_key)
    set_ot_engine(model, args.ot_engine)
    set_laplacian_chain(model, args.laplacian_chain)
    set_inner_product(model, args.inner_product)
    if model.public.security != "client-malicious":
        print(f"warning: {model.public.kind} is served semi-honest: a client that modifies its code can "
              "learn more than its predictions (the training weights); docs/malicious.md says which "
              "models and options have a client-malicious protocol", file=sys.stderr)
    if model.public.kind == "krr-gaussian" and model.public.security == "client-malicious":
        from protocols.krr import gaussian_malicious

        # the lattice cross term with the client's ciphertexts proven well formed (pure numpy: no
        # TenSEAL needed) or the OT one: 'auto' takes the one with fewer bytes per query
        model.public.cross_term = _malicious_cross_term(args.cross_term, model.public)
        model.public.validate()
        # encoding before the first client; with the lattice cross term, one reply pad kept ready
        # (the query-independent half of the reply, made before each session: stop 11)
        gaussian_malicious.prepare_server(model.params, model.public, reply_pads=1)
    elif model.public.kind == "krr-laplacian" and model.public.security == "client-malicious":
        from protocols.krr import laplacian_malicious, laplacian_strict

        # encoding before the first client (the bound chain: also its check's per-model sort plans)
        chain = laplacian_strict if model.public.laplacian_chain == "bound" else laplacian_malicious
        chain.prepare_server(model.params, model.public)
    elif model.public.kind == "krr-laplacian":
        from protocols.krr import laplacian

        laplacian.prepare_server(model.params, model.public)  # encoding before the first client
    elif model.public.kind == "krr-gaussian":
        from protocols.krr import gaussian

        model.public.cross_term = _cross_term(args.cross_term, model.public)
        model.public.validate()
        # query-independent set-up before the first client (encoding, NTT plaintexts of the rows)
        gaussian.prepare_server(model.params, model.public)
    elif model.public.kind == "linear" and model.public.security == "semi-honest":
        if args.cross_term == "ot":  # the OT path, semi-honest (the lattice one is the default)
            model.public.cross_term = "ot"
            model.public.validate()
        if model.public.lattice_linear:
            from protocols.krr import linear_he

            linear_he.prepared(model)  # the weight polynomial's spectra before the first client
    set_compact_corrections(model, args.compact_corrections, args.compact_precorrect)
    model.resume_ot = not args.no_resume
    model.precompute_ot = bool(args.precompute_ot)
    ctx = (pki.server_context(args.tls_cert, args.tls_key, args.client_ca, cert_optional=bool(args.tokens))
           if args.tls_cert else None)
    auth = Authenticator(tokens=load_tokens(args.tokens) if args.tokens else None,
                         cert_auth=bool(args.client_ca))
    if not auth.required:
        logging.getLogger("secureml.serve").warning(
            "no client authentication (--client-ca / --tokens): anyone who reaches the port can query")
    if args.max_per_client < 0:
        raise SecureMLError("--max-per-client must be at least 0 (0: no per-client bound)")
    if args.max_sessions_per_client < 0:
        raise SecureMLError("--max-sessions-per-client must be at least 0 (0: no per-client bound)")
    limits = Limits(handshake_s=args.handshake_timeout, idle_s=args.idle_timeout, min_rate=args.min_rate,
                    max_queue=args.max_queue, max_pending=args.max_pending, max_idle=args.max_idle,
                    max_per_client=args.max_per_client, max_sessions_per_client=args.max_sessions_per_client)
    audit = AuditLog(args.audit_log, getattr(model, "sha256", "")) if args.audit_log else None
    if args.workers < 1 or args.concurrency < 1:
        raise SecureMLError("--workers and --concurrency must be at least 1")
    model.set_defense(args.round_to, args.noise)  # public: announced in the handshake
    extra = {}
    ledger = query_ledger(args)
    if ledger is not None:
        from protocols.net.frontdoor import admit_hook

        extra["admit"] = admit_hook(ledger)
    if model.public.output_defense:
        from protocols.krr.defense import OutputDefense

        print(f"secureml: output defense: {OutputDefense.from_dict(model.public.output_defense).describe()}",
              flush=True)
    from protocols.krr.server import AbortCounter

    if args.max_aborts < 0:
        raise SecureMLError("--max-aborts must be at least 0 (0: no limit)")
    # with a ledger (--budget/--rate) the count lives in its file: shared by workers, kept across restarts
    extra["aborts"] = AbortCounter(args.max_aborts or None, store=ledger)
    try:
        serve(model, args.host, args.port, ssl_context=ctx, max_sessions=args.max_sessions,
              concurrency=args.concurrency, limits=limits, auth=auth, audit=audit, workers=args.workers,
              keep_alive=args.keep_alive, **extra)
    except KeyboardInterrupt:
        return 0
    return 0


def set_compact_corrections(model: Any, choice: str, precorrect: bool = False) -> None:
    """--compact-corrections: 'rounded' makes a client-malicious compact model's pooled sessions
    send rounded COT corrections (protocols.krr.linear.round_bits); --compact-precorrect makes its
    pool refills send the next session's corrections; both refused for other models."""
    if precorrect:
        if model.public.kind != "linear" or model.public.security != "client-malicious":
            from secureml.errors import SecureMLError

            raise SecureMLError("--compact-precorrect is for compact models served client-malicious (their OT pool)")
        model.ot_pool_precorrect = True
    if choice == "rounded":
        if model.public.kind != "linear" or model.public.security != "client-malicious":
            from secureml.errors import SecureMLError

            raise SecureMLError("--compact-corrections rounded is for compact models served client-malicious "
                                "(their pooled OT sessions)")
        model.round_ot_corrections()


def set_ot_engine(model: Any, engine: str) -> None:
    """--ot-engine for a Laplacian model ('auto' keeps the size rule of ServedModel), in either
    security mode (client-malicious: checked where the client chooses, protocol 27); other kinds
    ignore it (their OTs are checked SoftSpoken or lattice products)."""
    if engine != "auto" and model.public.kind == "krr-laplacian":
        model.public.ot_engine = engine
        model.public.validate()


def set_laplacian_chain(model: Any, chain: str) -> None:
    """--laplacian-chain for a Laplacian model (public: the client runs the same protocol); other kinds
    and semi-honest sessions ignore it."""
    if model.public.kind == "krr-laplacian":
        model.public.laplacian_chain = chain
        model.public.validate()


def set_inner_product(model: Any, choice: str) -> None:
    """--inner-product for a semi-honest exact-kernel model ('auto' keeps the byte rule of
    PublicParams.lattice_sum); client-malicious and compact models ignore it (their own last steps)."""
    from protocols.krr.params import EXACT_KINDS

    if model.public.kind in EXACT_KINDS and model.public.security == "semi-honest":
        model.public.inner_product = choice
        model.public.validate()


def _load(args: argparse.Namespace, verify_key: Any) -> Any:
    """The served model in the security mode asked for; 'auto' falls back to semi-honest only where the
    model kind or the options (output defenses, distance width) have no client-malicious protocol."""
    from protocols.krr import ServedModel
    from protocols.krr.params import CLIENT_MALICIOUS_KINDS
    from secureml.errors import ProtocolError, SecureMLError

    def load(security: str) -> Any:
        return ServedModel.from_file(args.model, frac_bits=args.frac_bits, security=security, verify_key=verify_key)

    if args.security == "semi-honest":
        return load("semi-honest")
    try:
        model = load("client-malicious")
    except ProtocolError:  # e.g. distances wider than the client-malicious Gaussian protocol serves
        if args.security == "auto":
            return load("semi-honest")
        raise
    reason = None
    if model.public.kind not in CLIENT_MALICIOUS_KINDS:
        reason = f"{model.public.kind} models have no client-malicious protocol yet"
    elif args.round_to is not None:
        reason = "output rounding (--round-to) is not part of the client-malicious protocols yet (--noise is)"
    if reason is None:
        return model
    if args.security == "auto":
        return load("semi-honest")
    raise SecureMLError(f"{reason}: serve it with --security semi-honest (docs/malicious.md)")


def _malicious_cross_term(choice: str, public: Any) -> str:
    """Client-malicious Gaussian: 'auto' picks the cross term with the smaller byte estimate per
    query (the checked lattice one has a ~6 MB floor: the OT one is cheaper up to N = 150 at
    d = 351; protocols.krr.binding.cross_term_bytes); 'he'/'ot' as asked."""
    if choice != "auto":
        return choice
    from protocols.krr import binding

    picked = binding.cheaper_cross_term(public)
    est = binding.cross_term_bytes(public)
    he = "no plan" if est["he"] is None else f"{est['he'] / 1e6:.1f} MB"
    print(f"secureml: cross term {picked} (estimated bytes per query: lattice {he}, OT {est['ot'] / 1e6:.1f} MB)",
          flush=True)
    return picked


def _cross_term(choice: str, public: Any) -> str:
    """'auto' picks the lattice cross term where TenSEAL is installed (the light install has none)
    and its rounding keeps this model's precision (``PublicParams.lattice_cross_term_fits``:
    not on a coarse --frac-bits grid), else the exact OT one."""
    if choice != "auto":
        return choice
    if public.cross_term == "ot":  # the model's own plan already found the lattice one too coarse
        return "ot"
    import importlib.util

    try:
        return "he" if importlib.util.find_spec("tenseal") is not None else "ot"
    except ImportError:  # an import hook that refuses the package counts as "not installed"
        return "ot"
