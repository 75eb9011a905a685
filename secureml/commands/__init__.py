"""Sub-commands of the ``secureml`` CLI: one module each, with ``register(subparsers)``."""
