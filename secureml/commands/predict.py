"""``secureml predict``: the query owner's client for double-blind prediction."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="get double-blind predictions for your molecules from a `secureml serve` server",
        description="Your molecules never leave this machine in the clear; the server's model "
        "never leaves the server. Give molecules as xyz files/folders, extended xyz, or SMILES.",
    )
    p.add_argument("--server", required=True, help="HOST:PORT of the model owner's server")
    p.add_argument("--xyz", "--molecules", dest="xyz", nargs="+", default=[], metavar="PATH",
                   help="molecule files: xyz / extended xyz, .sdf, .pdb, .npz, or folders of .xyz files")
    p.add_argument("--smiles", nargs="+", default=[], help="SMILES (3D geometry by RDKit ETKDG + xTB relaxation)")
    p.add_argument("--batch", default=None, help="a text file with one SMILES or xyz path per line")
    p.add_argument("--cost", action="store_true", help="print time, bytes and rounds")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    g = p.add_argument_group("TLS and identity")
    g.add_argument("--tls", action="store_true", help="connect over TLS (implied by --ca / --cert)")
    g.add_argument("--ca", "--tls-ca", dest="tls_ca", default=None,
                   help="CA certificate to trust for the server (PEM; default: the system's)")
    g.add_argument("--tls-server-name", default=None,
                   help="host name the server certificate must name (default: the --server host)")
    g.add_argument("--cert", default=None, help="your client certificate (mutual TLS; `secureml keys client`)")
    g.add_argument("--key", default=None, help="private key for --cert")
    g.add_argument("--token", default=None, help="bearer token (prefer --token-file: command lines are visible)")
    g.add_argument("--token-file", default=None, help="file holding your bearer token (`secureml keys token --out`)")
    g = p.add_argument_group("connection")
    g.add_argument("--handshake-timeout", type=float, default=30.0,
                   help="the server must answer the hello within this many seconds (default 30)")
    g.add_argument("--retries", type=int, default=8,
                   help="retries when the server is busy or sheds the connection (default 8, backoff up to 8 s)")
    g.add_argument("--batch-size", type=int, default=64,
                   help="queries per session; more are split into sessions (default 64, at most 256)")
    g.add_argument("--keep-alive", action=argparse.BooleanOptionalAction, default=True,
                   help="run the batches' sessions on one connection when the server keeps it (no connect per "
                   "session; off with --no-resume, which must not link sessions) (default: on)")
    p.add_argument("--no-resume", action="store_true",
                   help="compact models: present no OT-session ticket and keep none (the server cannot "
                   "link this session to your others; every session runs its base OTs)")
    p.set_defaults(func=run)


def load_queries(xyz: list[str], smiles: list[str], batch: str | None):
    """Collect the query molecules into one MolecularDataset (names kept for the output)."""
    import numpy as np

    from secureml.data import MolecularDataset
    from secureml.data.readers import read_molecules
    from secureml.errors import DataError

    xyz, smiles = list(xyz), list(smiles)
    if batch:
        for line in Path(batch).read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            (xyz if Path(line).exists() else smiles).append(line)
    charges, coords, names = [], [], []
    for item in xyz:
        path = Path(item)
        files = sorted(path.glob("*.xyz")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: no .xyz files")
        for f in files:
            ds = read_molecules(f, geometry="xtb", progress=False)
            for i in range(len(ds)):
                charges.append(ds.charges[i])
                coords.append(ds.coordinates[i])
                names.append(f"{f.name}#{i}" if len(ds) > 1 else f.name)
    if smiles:
        from secureml.data.geometry import smiles_to_molecule

        from tqdm import tqdm

        # ~0.3-5 s per molecule (ETKDG + xTB relaxation): show progress beyond a couple of them
        for s in tqdm(smiles, desc="3-D geometries (xTB)", unit="mol", disable=len(smiles) < 3):
            z, x = smiles_to_molecule(s)
            charges.append(np.asarray(z))
            coords.append(np.asarray(x))
            names.append(s)
    if not charges:
        raise DataError("no query molecules: give --xyz, --smiles or --batch")
    return MolecularDataset(charges=charges, coordinates=coords, names=names)


def run(args: argparse.Namespace) -> int:
    from protocols.krr import molecules_featurizer, predict
    from protocols.net import pki
    from secureml.data.units import known_unit
    from protocols.net.errors import PeerDisconnected
    from secureml.errors import DataError, ProtocolError

    queries = load_queries(args.xyz, args.smiles, args.batch)
    featurize = molecules_featurizer(queries)  # refuses an element the model never saw, by name
    ctx = None
    if args.tls or args.tls_ca or args.cert:
        ctx = pki.client_context(args.tls_ca, args.cert, args.key)
    token = args.token
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise DataError(f"cannot read --token-file: {exc}") from None
    try:
        preds, cost, pp = predict(args.server, featurize=featurize, ssl_context=ctx, resume_ot=not args.no_resume,
                                  token=token, server_hostname=args.tls_server_name,
                                  handshake_timeout=args.handshake_timeout, retries=args.retries,
                                  batch_size=args.batch_size, with_params=True, keep_alive=args.keep_alive)
    except PeerDisconnected as exc:
        # after the handshake: the server stopped mid-session (its log names the error class);
        # nothing about the queries was revealed, so retrying is safe
        raise ProtocolError(f"the server at {args.server} ended the session before answering ({exc}); "
                            "its log says why: ask its operator, or retry") from None
    prop = pp.property_name or "prediction"
    unit = pp.property_unit or known_unit(pp.property_name)
    model = f"{pp.kind} model, {pp.n_train} training molecules"
    rows = [{"molecule": n, "property": prop, "prediction": float(p), "unit": unit} for n, p in zip(queries.names, preds)]
    width = max(len(r["molecule"]) for r in rows)
    print(f"{'molecule':<{width}}  {prop} ({unit or 'unit unknown'})  [{model} at {args.server}]")
    for r in rows:
        print(f"{r['molecule']:<{width}}  {r['prediction']:14.4f} {unit}")
    out = {"server": args.server, "model": {"kind": pp.kind, "n_train": pp.n_train, "property": prop, "unit": unit},
           "predictions": rows}
    if args.cost:
        c = cost.to_dict()
        print(f"cost: {c['wall_s']:.2f} s (setup {c['offline_s']:.2f} s, online {c['online_s']:.2f} s), "
              f"sent {c['bytes_sent'] / 1e6:.2f} MB, received {c['bytes_received'] / 1e6:.2f} MB, "
              f"{c['rounds']} rounds")
        out["cost"] = c
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0
