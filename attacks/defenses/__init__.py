"""Defenses against the attacks of :mod:`attacks`, and their evaluation.

* :mod:`attacks.defenses.mechanisms` -- the defenses as the attacker meets them: output rounding
  and fresh noise (what :mod:`protocols.krr.defense` does inside the protocols), deterministic
  per-query noise (simulated), stronger ridge, differentially private training;
* :mod:`attacks.defenses.matrix` -- every attack, with adaptive variants (repeat-averaging,
  dithering, rounding-aware step sizes, least-squares extraction), against every defense;
* :mod:`attacks.defenses.report` -- ``secureml report defenses``: tables, Pareto fronts, plots;
* :mod:`attacks.defenses.dpsgd` -- DP-SGD (Opacus) for the KKT reconstruction's networks.
"""
