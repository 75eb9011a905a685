"""``secureml keys``: the model owner's certificates, client tokens and model-signing keys."""
from __future__ import annotations

import argparse
import secrets
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="make a CA, server/client certificates, client tokens and model-signing keys",
        description="Everything a model owner needs to expose a server: a certificate authority "
        "(ca), the server's certificate (server), one certificate per client (client: mutual TLS), "
        "bearer tokens (token) and an Ed25519 key that signs model files (signing). Private keys "
        "are written with mode 0600.",
    )
    ks = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    c = ks.add_parser("ca", help="a new certificate authority: OUT.key, OUT.pem")
    c.add_argument("--out", default="ca", help="file stem (default ca)")
    c.add_argument("--name", default="secureml model owner CA", help="CA common name")
    for kind in ("server", "client"):
        c = ks.add_parser(kind, help=f"a {kind} certificate signed by the CA: OUT.key, OUT.pem")
        c.add_argument("--ca", default="ca", help="CA file stem (CA.key, CA.pem; default ca)")
        c.add_argument("--name", required=kind == "client", default=None if kind == "client" else "localhost",
                       help="client identity (common name)" if kind == "client"
                       else "server common name (default localhost)")
        if kind == "server":
            c.add_argument("--hosts", nargs="+", default=None,
                           help="DNS names / IP addresses clients connect to (default: localhost 127.0.0.1)")
        c.add_argument("--out", default=None, help=f"file stem (default {kind} / the client name)")
        c.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    c = ks.add_parser("token", help="a bearer token for a client: prints it once, appends its hash to --tokens")
    c.add_argument("--name", required=True, help="client identity (letters, digits, - _ .)")
    c.add_argument("--tokens", default="tokens.txt", help="server's tokens file (hashes only; default tokens.txt)")
    c.add_argument("--out", default=None, help="also write the token to this file (mode 0600) for the client")
    c = ks.add_parser("signing", help="an Ed25519 key pair that signs model files: OUT.key, OUT.pub")
    c.add_argument("--out", default="model-signing", help="file stem (default model-signing)")
    p.set_defaults(func=run)


def _stem(s: str) -> Path:
    p = Path(s)
    return p.with_suffix("") if p.suffix in (".pem", ".key", ".pub") else p


def run(args: argparse.Namespace) -> int:
    from protocols.net import pki
    from secureml.errors import SecureMLError

    if args.what == "ca":
        out = _stem(args.out)
        key, cert = pki.make_ca(args.name)
        pki.write_private(out.with_suffix(".key"), key)
        out.with_suffix(".pem").write_bytes(cert)
        print(f"CA: {out.with_suffix('.pem')} (give to clients), {out.with_suffix('.key')} (keep secret)")
    elif args.what in ("server", "client"):
        ca = _stem(args.ca)
        try:
            ca_key, ca_cert = ca.with_suffix(".key").read_bytes(), ca.with_suffix(".pem").read_bytes()
        except OSError as exc:
            raise SecureMLError(f"cannot read the CA ({exc}); make one with `secureml keys ca`") from None
        server = args.what == "server"
        hosts = (args.hosts or ["localhost", "127.0.0.1"]) if server else None
        out = _stem(args.out or ("server" if server else args.name))
        key, cert = pki.issue(ca_key, ca_cert, args.name, server=server, hosts=hosts, days=args.days)
        pki.write_private(out.with_suffix(".key"), key)
        out.with_suffix(".pem").write_bytes(cert)
        what = f"for {', '.join(hosts)}" if server else f"identity {args.name!r}"
        print(f"{args.what} certificate {what}: {out.with_suffix('.pem')}, key {out.with_suffix('.key')}")
    elif args.what == "token":
        from protocols.net.frontdoor import hash_token, load_tokens

        name = args.name
        if not name or any(not (ch.isalnum() or ch in "-_.") for ch in name) or len(name) > 64:
            raise SecureMLError("token --name: letters, digits, '-', '_' and '.' only (at most 64)")
        tokens = Path(args.tokens)
        if tokens.exists() and name in load_tokens(tokens).values():
            raise SecureMLError(f"{tokens} already has a token for {name!r}")
        token = "sml_" + secrets.token_urlsafe(32)
        with open(tokens, "a") as f:
            f.write(f"{name} {hash_token(token)}\n")
        if args.out:
            pki.write_private(args.out, (token + "\n").encode())
        print(token)
        print(f"(token for {name!r}; its hash was appended to {tokens}; shown once)", file=__import__("sys").stderr)
    elif args.what == "signing":
        from secureml.models.signing import generate_signing_key

        out = _stem(args.out)
        priv, pub = generate_signing_key()
        pki.write_private(out.with_suffix(".key"), priv)
        out.with_suffix(".pub").write_bytes(pub)
        print(f"signing key: {out.with_suffix('.key')} (keep secret), public key {out.with_suffix('.pub')} "
              "(give to `secureml serve --verify-key`)")
    return 0
