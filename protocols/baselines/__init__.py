"""Peer engines measured against the OT-based protocols: CKKS (TenSEAL), CrypTen, generic MPC.

Application layer beside :mod:`protocols.krr`; neither imports the other.
"""
