"""Molecular data: QM9 from qm9pack, the embedded default set, file formats, geometries.

Heavy dependencies (pandas, ASE, RDKit, tblite) are imported only inside the functions needing them.
"""
from secureml.data.dataset import MolecularDataset
from secureml.data.embedded import embedded_info, embedded_split, load_embedded
from secureml.data.formats import (
    read_extxyz,
    read_npz,
    read_qm7,
    read_qm9_xyz,
    read_xyz,
    validate_molecule,
    write_extxyz,
    write_npz,
)
from secureml.data.geometry import relax_xtb, smiles_to_molecule, xtb_properties
from secureml.data.qm9 import PROPERTY_INFO, load_qm9

__all__ = [
    "MolecularDataset",
    "PROPERTY_INFO",
    "embedded_info",
    "embedded_split",
    "load_embedded",
    "load_qm9",
    "read_extxyz",
    "read_npz",
    "read_qm7",
    "read_qm9_xyz",
    "read_xyz",
    "relax_xtb",
    "smiles_to_molecule",
    "validate_molecule",
    "write_extxyz",
    "write_npz",
    "xtb_properties",
]
