"""Attacks that measure what KRR models and their deployments leak.

* :mod:`attacks.targets` -- the four deployments behind one interface (model file, plaintext
  API, OT service, FHE service).
* :mod:`attacks.chem` / :mod:`attacks.whitebox` -- molecules from Coulomb-matrix model files;
  training data and membership from random-feature weights.
* :mod:`attacks.reconstruction` -- query-only reconstruction (exact kink attack for Laplacian
  kernels, Barzilai-style free-centre fit).
* :mod:`attacks.membership`, :mod:`attacks.ranking` -- membership inference, candidate ranking.
* :mod:`attacks.experiments`, :mod:`attacks.report` -- drivers, the leakage matrix and summary.
* :mod:`attacks.kkt` -- KKT-based reconstruction from trained networks (separate work).
"""
