"""secureml: double-blind machine-learning prediction of molecular quantum properties."""

__version__ = "0.1.0"
