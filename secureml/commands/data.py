"""``secureml data``: what data is available, export subsets, label your own molecules with xTB."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

EPILOG = """examples:
  secureml data info
  secureml data export --subset embedded --split test --out test.xyz
  secureml data export --subset qm9 --n 1000 --max-heavy-atoms 8 --out qm9_1000.xyz
  secureml data label --smiles CCO c1ccccc1 --out mine.xyz
  secureml data label --smiles-file mols.smi --keep-going --out mine.xyz
  secureml data label --xyz geometries.xyz --relax xtb --out mine.xyz
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="list, export and label molecular data (QM9, the embedded set, your own molecules)",
        description="Molecular data: the embedded default set, QM9 from qm9pack, and GFN2-xTB labels "
        "for your own molecules. Files are extended xyz (readable with ASE).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    info = dsub.add_parser("info", help="describe the available data sets, properties, units and the cache")
    info.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                      help="write machine-readable JSON to PATH (no PATH: print it instead of text)")
    info.set_defaults(func=run_info)

    exp = dsub.add_parser(
        "export",
        help="write a subset of the embedded set or of QM9 as extended xyz",
        description="Write molecules with all (or chosen) properties as extended xyz.",
    )
    exp.add_argument("--data", "--subset", dest="subset", choices=["embedded", "qm9"], default="embedded",
                     help="embedded: 3,921 QM9 molecules with <= 7 heavy atoms, shipped with secureml; "
                     "qm9: all 130,831 molecules from qm9pack (parsed and cached on first use)")
    exp.add_argument("--split", choices=["all", "train", "test"], default="all",
                     help="embedded only: the seeded 80/20 split (default: all)")
    exp.add_argument("--n", "--n-molecules", dest="n", type=int, default=None,
                     help="number of molecules (seeded random choice; default: all)")
    exp.add_argument("--max-heavy-atoms", type=int, default=None, help="keep molecules with at most K heavy atoms")
    exp.add_argument("--seed", type=int, default=0, help="seed of the random choice / split (default 0)")
    exp.add_argument("--properties", default=None,
                     help="comma-separated property names (default: all; see 'secureml data info')")
    exp.add_argument("--out", type=Path, required=True, help="output extended-xyz file")
    exp.set_defaults(func=run_export)

    lab = dsub.add_parser(
        "label",
        help="compute GFN2-xTB properties for your own molecules (SMILES or xyz)",
        description="Build 3-D geometries (RDKit ETKDG + MMFF94 + GFN2-xTB relaxation for SMILES) and "
        "label them with GFN2-xTB (tblite): xtb_energy (Hartree), xtb_atomization (kcal/mol), "
        "xtb_homo, xtb_lumo, xtb_gap (eV), xtb_dipole (D). Writes extended xyz plus a JSON summary.",
    )
    src = lab.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", nargs="+", metavar="SMILES", help="one or more SMILES")
    src.add_argument("--smiles-file", type=Path, help="file with one SMILES per line (optional name after it)")
    src.add_argument("--xyz", type=Path, help="xyz / extended-xyz file with one or more geometries")
    lab.add_argument("--relax", choices=["xtb", "mmff", "none"], default=None,
                     help="geometry relaxation (default: xtb for SMILES, none for --xyz; mmff is SMILES only)")
    lab.add_argument("--charge", type=int, default=0, help="total charge for --xyz molecules (default 0)")
    lab.add_argument("--seed", type=int, default=0, help="ETKDG embedding seed (default 0)")
    lab.add_argument("--keep-going", action="store_true",
                     help="skip molecules that fail (listed in the JSON summary) instead of stopping")
    lab.add_argument("--out", type=Path, required=True, help="output extended-xyz file (summary: same name, .json)")
    lab.set_defaults(func=run_label)

    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def run_info(args: argparse.Namespace) -> int:
    from secureml.data import embedded_info, embedded_split
    from secureml.data.qm9 import PROPERTY_INFO, qm9_summary

    emb = embedded_info()
    train, test = embedded_split()
    emb["split"] = {"train": int(len(train)), "test": int(len(test)), "rule": "seeded 80/20 permutation (seed 0)"}
    info = {
        "embedded": emb,
        "qm9": qm9_summary(),
        "properties": {k: {"unit": u, "description": d} for k, (u, d) in PROPERTY_INFO.items()},
    }
    if args.json:
        if args.json == "-":
            print(json.dumps(info, indent=2))
            return 0
        Path(args.json).write_text(json.dumps(info, indent=2))
    q = info["qm9"]
    print("embedded default set (shipped inside secureml, no download)")
    print(f"  {emb['molecules']} molecules, up to {emb['max_atoms']} atoms; {emb['selection']}")
    print(f"  split: {len(train)} train / {len(test)} test ({emb['split']['rule']})")
    print(f"  source: {emb['source']}")
    print("QM9 (read from the installed qm9pack wheel)")
    if "error" in q:
        print(f"  unavailable: {q['error']}")
    else:
        print(f"  qm9pack {q['qm9pack_version']} at {q['qm9pack_data']}")
        print(f"  {q['molecules']} molecules" + (f", up to {q['max_atoms']} atoms" if "max_atoms" in q else ""))
        if "molecules_by_max_heavy_atoms" in q:
            sizes = ", ".join(f"<={k}: {v}" for k, v in q["molecules_by_max_heavy_atoms"].items() if int(k) >= 5)
            print(f"  molecules by max heavy atoms: {sizes}")
        print(f"  parsed cache: {'present' if q['cached'] else 'not yet built (first load parses, a few seconds)'}")
    print(f"cache folder: {q['cache']}  (set SECUREML_CACHE to move it)")
    print("properties (name, unit, description):")
    for k, (u, d) in PROPERTY_INFO.items():
        print(f"  {k:<15} {u:<12} {d}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from secureml.data import embedded_split, load_embedded, load_qm9, write_extxyz
    from secureml.errors import DataError

    props = [p.strip() for p in args.properties.split(",")] if args.properties else None
    if args.subset == "qm9":
        if args.split != "all":
            raise DataError("--split applies to --subset embedded only")
        data = load_qm9(n=args.n, max_heavy_atoms=args.max_heavy_atoms, seed=args.seed, properties=props)
    else:
        import numpy as np

        data = load_embedded()
        index = np.arange(len(data))
        if args.split != "all":
            train, test = embedded_split(seed=args.seed)
            index = train if args.split == "train" else test
        if args.max_heavy_atoms is not None:
            heavy = np.array([int((z > 1).sum()) for z in data.charges])
            index = index[heavy[index] <= args.max_heavy_atoms]
        if args.n is not None:
            if not 0 <= args.n <= len(index):
                raise DataError(f"--n {args.n}: only {len(index)} molecules match")
            index = index[np.random.default_rng(args.seed).permutation(len(index))[: args.n]]
        data = data.subset(index)
        if props is not None:
            unknown = [p for p in props if p not in data.properties]
            if unknown:
                raise DataError(f"unknown properties {unknown}; see 'secureml data info'")
            data.properties = {p: data.properties[p] for p in props}
    write_extxyz(data, args.out, progress=True)
    print(f"wrote {len(data)} molecules with {len(data.properties)} properties to {args.out}")
    return 0


def _inputs(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(name, SMILES string or (charges, coordinates)) for each molecule to label."""
    from secureml.data import read_xyz
    from secureml.errors import DataError

    if args.smiles:
        return [(s, s) for s in args.smiles]
    if args.smiles_file:
        try:
            lines = args.smiles_file.read_text().splitlines()
        except OSError as exc:
            raise DataError(f"{args.smiles_file}: cannot read ({exc.strerror or exc})") from None
        items = []
        for ln, line in enumerate(lines, start=1):
            tokens = line.split("#", 1)[0].split()
            if tokens:
                items.append((tokens[1] if len(tokens) > 1 else f"{args.smiles_file.stem}:{ln}", tokens[0]))
        if not items:
            raise DataError(f"{args.smiles_file}: empty file")
        return items
    mols = read_xyz(args.xyz)
    return [(n, (z, x)) for n, z, x in zip(mols.names, mols.charges, mols.coordinates)]


def run_label(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from rdkit import Chem

    from secureml.data import MolecularDataset, write_extxyz
    from secureml.data.geometry import relax_xtb, smiles_to_molecule, xtb_properties
    from secureml.errors import DataError

    from_smiles = args.xyz is None
    relax = args.relax or ("xtb" if from_smiles else "none")
    if relax == "mmff" and not from_smiles:
        raise DataError("--relax mmff needs SMILES (MMFF needs bonds); use xtb or none for --xyz")
    items = _inputs(args)
    charges, coords, names, smiles, labels, failures = [], [], [], [], [], []
    t0 = time.perf_counter()
    for name, item in tqdm(items, unit="mol", desc="labelling"):
        try:
            if from_smiles:
                z, x = smiles_to_molecule(item, relax=None if relax == "none" else relax, seed=args.seed)
                # smiles_to_molecule parsed it already, so this cannot fail; xTB needs the charge
                charge = Chem.GetFormalCharge(Chem.MolFromSmiles(item))
            else:
                z, x = item
                charge = args.charge
                if relax == "xtb":
                    x, _ = relax_xtb(z, x, charge=charge)
            props = xtb_properties(z, x, charge=charge)
        except DataError as exc:
            if not args.keep_going:
                raise DataError(str(exc) if name in str(exc) else f"{name}: {exc}") from None
            failures.append({"input": name, "error": str(exc)})
            continue
        charges.append(z)
        coords.append(x)
        names.append(name)
        smiles.append(item if from_smiles else "")
        labels.append(props)
    seconds = time.perf_counter() - t0
    summary = {
        "labelled": len(labels),
        "failed": failures,
        "method": "GFN2-xTB (tblite)",
        "geometry": {"xtb": "RDKit ETKDGv3 + MMFF94 + GFN2-xTB relaxation", "mmff": "RDKit ETKDGv3 + MMFF94",
                     "none": "as given" if not from_smiles else "RDKit ETKDGv3 only"}[relax],
        "seed": args.seed,
        "seconds_per_molecule": seconds / max(len(items), 1),
        "units": {"xtb_energy": "Hartree", "xtb_atomization": "kcal/mol", "xtb_homo": "eV", "xtb_lumo": "eV",
                  "xtb_gap": "eV", "xtb_dipole": "D"},
        "output": str(args.out),
    }
    if labels:
        data = MolecularDataset(
            charges, coords, {f"xtb_{k}": np.array([p[k] for p in labels]) for k in labels[0]}, names, smiles,
            {"source": "secureml data label", "method": summary["method"], "geometry": summary["geometry"]},
        )
        write_extxyz(data, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(f"labelled {len(labels)} of {len(items)} molecules in {seconds:.1f} s -> {args.out}"
          + (f" ({len(failures)} failed, see {args.out.with_suffix('.json')})" if failures else ""))
    if not labels:
        raise DataError("no molecule could be labelled")
    return 0 if not failures else 1
