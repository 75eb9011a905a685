"""Layer 2: oblivious transfer -- primitives, base OT, IKNP and SoftSpoken extension, sessions.

Imports only :mod:`protocols.net` (and :mod:`secureml.errors`).
"""
