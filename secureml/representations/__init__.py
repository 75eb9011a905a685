"""Molecular representations behind one small interface (fit / transform, fixed width).

``CoulombMatrix`` (sorted, unsorted, eigenspectrum) lives in :mod:`.coulomb`; FCHL19 atomic
environments in :mod:`.fchl` (imported lazily by :func:`representation_from_params`).
"""
from secureml.representations.base import (
    Representation,
    check_molecule,
    register_representation,
    registered_representations,
    representation_from_params,
)
from secureml.representations.coulomb import CoulombMatrix

__all__ = [
    "Representation",
    "CoulombMatrix",
    "check_molecule",
    "register_representation",
    "registered_representations",
    "representation_from_params",
]
