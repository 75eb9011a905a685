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
    p.add_argument("--tls", action="store_true", help="connect over TLS")
    p.add_argument("--tls-ca", default=None, help="CA / self-signed certificate to trust (PEM)")
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
    import ssl

    from protocols.krr import molecules_featurizer, predict_features
    from protocols.krr.client import parse_address
    from protocols.net.transport import connect
    from secureml.data.units import known_unit

    queries = load_queries(args.xyz, args.smiles, args.batch)
    featurize = molecules_featurizer(queries)  # refuses an element the model never saw, by name
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.tls_ca)
        ctx.check_hostname = False
    host, port = parse_address(args.server)
    ch = connect(host, port, ssl_context=ctx, channel_timeout=300.0)
    try:
        preds, cost, pp = predict_features(ch, featurize=featurize, resume_ot=not args.no_resume)
    finally:
        ch.close()
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
