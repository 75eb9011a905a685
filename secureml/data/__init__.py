"""Molecular data: QM9 from qm9pack, the embedded default set, file formats, geometries."""
from secureml.data.dataset import MolecularDataset
from secureml.data.embedded import embedded_info, embedded_split, load_embedded
from secureml.data.qm9 import PROPERTY_INFO, load_qm9

__all__ = ["MolecularDataset", "PROPERTY_INFO", "embedded_info", "embedded_split", "load_embedded", "load_qm9"]
