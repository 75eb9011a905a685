"""Layer 3: two-party share arithmetic -- rings and fixed point, sharing, Gilboa products,
Beaver triples, truncation, comparison, and the pluggable correlation providers.

Imports :mod:`protocols.ot` and :mod:`protocols.net`, never the applications above it.
"""
