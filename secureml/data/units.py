"""Property names and units: every number secureml prints or saves carries both.

Energies are learned and reported in kcal/mol, the unit of the published learning curves and of
"chemical accuracy" (1 kcal/mol). Orbital energies -- HOMO, LUMO and the HOMO-LUMO gap -- are the
exception: they are learned and reported in eV, the field's convention for them (QM9 papers and
benchmarks quote gap errors in eV or meV). A user's own property given in Hartree, eV, meV or
kJ/mol is converted once, when it is read for training (:func:`to_training_unit`), to kcal/mol, or
to eV when its name says it is an orbital energy (:func:`is_orbital_energy`); the model file
records the unit its predictions are in, and predictions are printed with it.

Conversion factors are CODATA 2018 (the same ones :mod:`secureml.data.qm9` uses).
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from secureml.data.qm9 import PROPERTY_INFO
from secureml.errors import DataError

HARTREE_TO_KCAL_MOL = 627.5094740631
EV_TO_KCAL_MOL = 23.060547830619  # HARTREE_TO_KCAL_MOL / 27.211386245988
KJ_MOL_TO_KCAL_MOL = 1 / 4.184

# The unit every energy is trained and predicted in.
ENERGY_UNIT = "kcal/mol"
# The unit orbital energies (HOMO, LUMO, gap) are trained and predicted in.
ORBITAL_ENERGY_UNIT = "eV"
# "homo", "LUMO", "xtb_gap", "HOMO_LUMO_gap_au", "gap (eV)": a homo/lumo/gap word in the name
_ORBITAL_NAME = re.compile(r"(?:^|[^a-z])(homo|lumo|gap)(?:$|[^a-z])", re.IGNORECASE)
# Chemical accuracy, the usual target for thermochemistry (kcal/mol).
CHEMICAL_ACCURACY = 1.0

# energy unit spelling -> factor to kcal/mol
_ENERGY_UNITS: dict[str, float] = {
    "kcal/mol": 1.0,
    "hartree": HARTREE_TO_KCAL_MOL,
    "ev": EV_TO_KCAL_MOL,
    "mev": EV_TO_KCAL_MOL / 1000,
    "kj/mol": KJ_MOL_TO_KCAL_MOL,
}
_ALIASES = {"ha": "hartree", "eh": "hartree", "au": "hartree", "a.u.": "hartree", "kcal": "kcal/mol",
            "kcal mol-1": "kcal/mol", "kcal/mole": "kcal/mol", "kj": "kj/mol", "kj mol-1": "kj/mol"}
_CANONICAL = {"kcal/mol": "kcal/mol", "hartree": "Hartree", "ev": "eV", "mev": "meV", "kj/mol": "kJ/mol"}

# Units of properties secureml itself produces (QM9 names come from secureml.data.qm9).
_OWN_PROPERTIES: dict[str, str] = {
    "xtb_energy": "Hartree",
    "xtb_atomization": "kcal/mol",
    "xtb_homo": "eV",
    "xtb_lumo": "eV",
    "xtb_gap": "eV",
    "xtb_dipole": "D",
    "energy": "kcal/mol",  # read_qm7's default name for qml's hof_qm7.txt (PBE0 atomization, kcal/mol)
}


def canonical_unit(unit: str) -> str:
    """``"ha"`` -> ``"Hartree"``, ``"EV"`` -> ``"eV"``; other units are returned as given."""
    key = unit.strip().lower()
    key = _ALIASES.get(key, key)
    return _CANONICAL.get(key, unit.strip())


def is_energy_unit(unit: str) -> bool:
    """True for Hartree, eV, meV, kJ/mol and kcal/mol (any common spelling)."""
    key = unit.strip().lower()
    return _ALIASES.get(key, key) in _ENERGY_UNITS


def known_unit(property_name: str) -> str:
    """Unit of a property secureml knows by name (QM9's, xTB labels), else ``""``."""
    if property_name in PROPERTY_INFO:
        return PROPERTY_INFO[property_name][0]
    return _OWN_PROPERTIES.get(property_name, "")


def convert(values: Any, from_unit: str, to_unit: str = ENERGY_UNIT) -> np.ndarray:
    """Energies ``values`` in ``from_unit`` expressed in ``to_unit`` (both energy units)."""
    for u in (from_unit, to_unit):
        if not is_energy_unit(u):
            raise DataError(f"cannot convert {from_unit!r} to {to_unit!r}: {u!r} is not an energy unit "
                            f"(known: {', '.join(_CANONICAL.values())})")
    f = _ENERGY_UNITS[_ALIASES.get(from_unit.strip().lower(), from_unit.strip().lower())]
    t = _ENERGY_UNITS[_ALIASES.get(to_unit.strip().lower(), to_unit.strip().lower())]
    return np.asarray(values, dtype=np.float64) * (f / t)


def is_orbital_energy(property_name: str) -> bool:
    """True when the property's name says it is a HOMO, LUMO or HOMO-LUMO gap energy."""
    return bool(_ORBITAL_NAME.search(property_name or ""))


def training_unit(property_name: str = "") -> str:
    """The energy unit a property is trained and predicted in: eV for orbital energies, else kcal/mol."""
    return ORBITAL_ENERGY_UNIT if is_orbital_energy(property_name) else ENERGY_UNIT


def to_training_unit(values: Any, unit: str, property_name: str = "") -> tuple[np.ndarray, str]:
    """(values, unit) to train on: orbital energies (by ``property_name``) in eV, other energies in
    kcal/mol, anything else unchanged."""
    if unit and is_energy_unit(unit):
        target = training_unit(property_name)
        return convert(values, unit, target), target
    return np.asarray(values, dtype=np.float64), canonical_unit(unit) if unit else ""


def label(property_name: str, unit: str) -> str:
    """``"U0_atomization (kcal/mol)"``; ``"gap (unit unknown)"`` when there is no unit."""
    return f"{property_name} ({unit or 'unit unknown'})"


def fmt(value: float, unit: str, digits: int = 3) -> str:
    """``"1.234 kcal/mol"``."""
    return f"{value:.{digits}f} {unit}".rstrip()


__all__ = [
    "CHEMICAL_ACCURACY",
    "ENERGY_UNIT",
    "ORBITAL_ENERGY_UNIT",
    "HARTREE_TO_KCAL_MOL",
    "EV_TO_KCAL_MOL",
    "canonical_unit",
    "convert",
    "fmt",
    "is_energy_unit",
    "is_orbital_energy",
    "known_unit",
    "label",
    "to_training_unit",
    "training_unit",
]
