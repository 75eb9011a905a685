"""``secureml sign``: sign a model file with the owner's Ed25519 key."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sign", help="sign a model file (Ed25519) so `serve --verify-key` accepts it",
                       description="Verifies the file's content hash, then adds a signature of it by "
                       "--key (from `secureml keys signing`). Writes in place unless --out is given.")
    p.add_argument("--model", required=True, help="model file (.npz)")
    p.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    p.add_argument("--out", default=None, help="write the signed file here (default: in place)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from secureml.models.io import sign_model_file
    from secureml.models.signing import load_private_key

    out = sign_model_file(args.model, load_private_key(args.key), args.out)
    print(f"signed {out}")
    return 0
