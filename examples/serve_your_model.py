"""Serve your own model: from your SDF file to a double-blind prediction, in one script.

A chemist's path: molecules with a computed property in an SD file -> a model trained on them ->
a server holding the model -> a client that predicts a new molecule without showing it to the
server (and without seeing the model). Run it:

    python examples/serve_your_model.py            # 400 training molecules
    python examples/serve_your_model.py --small    # 120 (what the test suite runs)

The same with the command line: `secureml train --data mols.sdf --property energy --unit Hartree
--out run/`, `secureml serve --model run/model.npz --security semi-honest`, `secureml predict --server HOST:7000
--molecules new.sdf`.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

import numpy as np


def write_sdf(dataset, path: Path, prop: str) -> None:
    """Stand-in for your own file: embedded QM9 molecules with their energy in Hartree."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from secureml.data.formats import symbol

    w = Chem.SDWriter(str(path))
    for i in range(len(dataset)):
        z, x = dataset.charges[i], dataset.coordinates[i]
        block = f"{len(z)}\n\n" + "\n".join(f"{symbol(a)} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for a, p in zip(z, x))
        mol = Chem.MolFromXYZBlock(block)
        rdDetermineBonds.DetermineConnectivity(mol)
        mol.SetProp("_Name", dataset.names[i])
        mol.SetProp("energy", f"{dataset.properties[prop][i] / 627.5094740631:.8f}")  # kcal/mol -> Hartree
        w.write(mol)
    w.close()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="120 training molecules (seconds)")
    args = ap.parse_args(argv)

    from protocols.krr import ServedModel, molecules_featurizer, predict, serve
    from secureml.data import embedded_split, load_embedded
    from secureml.data.readers import read_molecules, select_property
    from secureml.data.units import to_training_unit
    from secureml.models import build_model

    data = load_embedded()
    train_idx, test_idx = embedded_split(0)
    n = 120 if args.small else 400
    tmp_dir = tempfile.TemporaryDirectory(prefix="secureml-example-")  # removed at the end
    tmp = Path(tmp_dir.name)

    # 1. your data: an SD file with an "energy" field in Hartree
    write_sdf(data.subset(train_idx[:n]), tmp / "mine.sdf", "U0_atomization")
    write_sdf(data.subset(test_idx[:3]), tmp / "new.sdf", "U0_atomization")
    mols = read_molecules(tmp / "mine.sdf")
    name, hartree = select_property(mols, "energy")
    energy, unit = to_training_unit(hartree, "Hartree")  # trained and predicted in kcal/mol
    mols.properties = {name: energy}
    print(f"1. read {len(mols)} molecules with '{name}' from {tmp / 'mine.sdf'} (Hartree -> {unit})")

    # 2. train (Laplacian KRR on the sorted Coulomb matrix; local-sorf is the accurate choice at scale)
    model = build_model("krr-laplacian", cm_size=23)
    model.fit(mols, name)
    model.property_unit = unit
    path = model.save(tmp / "model.npz")
    print(f"2. trained on elements {model.elements_}; saved {path}")

    # 3. the model owner serves it (a thread here; `secureml serve` in practice)
    served = ServedModel.from_file(str(path))
    ready, stop, port = threading.Event(), threading.Event(), []
    th = threading.Thread(target=serve, args=(served, "127.0.0.1", 0), daemon=True,
                          kwargs=dict(on_ready=lambda p: (port.append(p), ready.set()), stop=stop, max_sessions=1))
    th.start()
    ready.wait(60)

    # 4. the query owner predicts its new molecules double-blind
    queries = read_molecules(tmp / "new.sdf")
    preds, cost = predict(f"127.0.0.1:{port[0]}", featurize=molecules_featurizer(queries))
    th.join(60)
    plain = model.predict(queries)
    reference = to_training_unit(queries.properties["energy"], "Hartree")[0]
    for nm, p, q, r in zip(queries.names, preds, plain, reference):
        print(f"4. {nm}: {name} = {p:.2f} {unit} double-blind ({q:.2f} in plaintext, reference {r:.2f})")
    print(f"   one session: {(cost.bytes_sent + cost.bytes_received) / 1e6:.1f} MB, {cost.wall_s:.2f} s, "
          f"{cost.rounds} rounds")
    tmp_dir.cleanup()
    return {"predictions": np.asarray(preds).tolist(), "plaintext": plain.tolist(), "unit": unit}


if __name__ == "__main__":
    main()
