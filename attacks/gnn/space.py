"""The generator's action space: a vocabulary scaffold plus one or two vocabulary motifs.

An action sequence is (scaffold s, number of substituents n in {1, 2}, (atom p1, motif m1),
(atom p2, motif m2)): the one-step and two-step attachments of the paper. Atoms are the scaffold
atoms that carry a hydrogen; two substituents go on distinct atoms. Molecules are built and
valence-checked by :func:`attacks.gnn.data.attach`; different action sequences can give the
same molecule (symmetric atoms), so everything downstream is keyed by canonical SMILES.

The prior (used by random generation and as the policy's initial logits) is the attacker's
auxiliary statistics: scaffold and motif frequencies and the share of one- vs two-substituent
molecules among reachable auxiliary molecules.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from attacks.gnn.data import Corpus, _mol, _scaffold_only, attach, decompose, load_moses


@dataclass
class Action:
    scaffold: int
    subs: tuple[tuple[int, int], ...]  # (scaffold atom, motif index)


class Space:
    def __init__(self, corpus: Corpus) -> None:
        self.scaffolds = list(corpus.scaffolds)
        self.motifs = list(corpus.motifs)
        sidx = {s: k for k, s in enumerate(self.scaffolds)}
        midx = {m: k for k, m in enumerate(self.motifs)}
        self.positions: list[np.ndarray] = []
        for s in self.scaffolds:
            m = _mol(s)
            self.positions.append(np.array([a.GetIdx() for a in m.GetAtoms() if a.GetTotalNumHs() > 0], dtype=int))
        # prior from the attacker's reachable auxiliary molecules (add-one smoothing)
        sc, mo, nsub = Counter(), Counter(), Counter()
        for smi in corpus.aux:
            d = corpus.decomposition.get(smi)
            if d is None or d[0] not in sidx or not 1 <= len(d[1]) <= 2 or any(m not in midx for _, m in d[1]):
                continue
            sc[sidx[d[0]]] += 1
            nsub[len(d[1])] += 1
            for _, m in d[1]:
                mo[midx[m]] += 1
        if not sc:  # no auxiliary molecules (a synthetic world): the corpus's stated frequencies
            sc = Counter({k: float(f) - 1.0 for k, f in enumerate(corpus.scaffold_freq)})
            mo = Counter({k: float(f) - 1.0 for k, f in enumerate(corpus.motif_freq)})
            nsub = Counter({1: 1.0, 2: 2.0})
        self.scaffold_prior = np.array([sc[k] + 1.0 for k in range(len(self.scaffolds))])
        self.scaffold_prior /= self.scaffold_prior.sum()
        self.motif_prior = np.array([mo[k] + 1.0 for k in range(len(self.motifs))])
        self.motif_prior /= self.motif_prior.sum()
        self.n_prior = np.array([nsub[1] + 1.0, nsub[2] + 1.0])
        self.n_prior /= self.n_prior.sum()
        self.n_reachable_aux = int(sum(sc.values()))

    def size(self) -> int:
        """Number of action sets (an upper bound on distinct molecules; symmetry merges some)."""
        M = len(self.motifs)
        return int(sum(len(p) * M + len(p) * (len(p) - 1) // 2 * M * M for p in self.positions))

    @lru_cache(maxsize=1_000_000)
    def _smiles(self, scaffold: int, subs: tuple[tuple[int, int], ...]) -> str | None:
        return attach(self.scaffolds[scaffold], [(p, self.motifs[m]) for p, m in subs])

    def smiles(self, a: Action) -> str | None:
        return self._smiles(a.scaffold, tuple(sorted(a.subs)))

    def sample_prior(self, n: int, rng: np.random.Generator) -> list[Action]:
        out = []
        for _ in range(n):
            s = int(rng.choice(len(self.scaffolds), p=self.scaffold_prior))
            pos = self.positions[s]
            k = 1 + int(rng.random() < self.n_prior[1]) if len(pos) > 1 else 1
            ps = rng.choice(pos, size=k, replace=False)
            ms = rng.choice(len(self.motifs), size=k, p=self.motif_prior)
            out.append(Action(s, tuple((int(p), int(m)) for p, m in zip(ps, ms))))
        return out

    def decomposition(self, a: Action) -> tuple[str, list[str]]:
        return self.scaffolds[a.scaffold], [self.motifs[m] for _, m in a.subs]


def unique_valid(space: Space, actions: Sequence[Action]) -> dict[str, Action]:
    """Canonical SMILES -> first action that builds it (invalid molecules dropped)."""
    out: dict[str, Action] = {}
    for a in actions:
        s = space.smiles(a)
        if s is not None and s not in out:
            out[s] = a
    return out


def generated_corpus(n_private: int = 40, n_shadows: int = 2, n_scaffolds: int = 6, n_motifs: int = 6,
                     n_scan: int = 1000, owner_scaffolds: int = 2, seed: int = 0) -> Corpus:
    """A small world for tests and quick runs: vocabularies from a short MOSES scan, and a focused
    library *generated* from the prior on ``owner_scaffolds`` of the scaffolds (private set); the
    attacker's shadow libraries are generated the same way on scaffolds drawn independently.

    Natural MOSES molecules with a top scaffold and 1-2 top motifs are ~1 % of MOSES, too few in
    a scan that takes seconds; generated members keep the attack's mechanics identical.
    """
    smiles = load_moses("train")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(smiles), size=n_scan, replace=False)
    scaf = [_scaffold_only(smiles[int(i)]) for i in idx]
    sc = Counter(filter(None, scaf))
    scaffolds = [s for s, _ in sc.most_common(n_scaffolds)]
    dec = {}
    for i, s in zip(idx, scaf):
        if s in scaffolds:
            d = decompose(smiles[int(i)])
            if d is not None:
                dec[attach(*d)] = d
    mo = Counter(m for d in dec.values() for _, m in d[1])
    motifs = [m for m, _ in mo.most_common(n_motifs)]
    return library_corpus(scaffolds, motifs, n_private=n_private, n_shadows=n_shadows, owner_scaffolds=owner_scaffolds,
                          rng=rng, aux=sorted(dec), decomposition=dict(dec),
                          scaffold_freq=np.array([sc[s] for s in scaffolds], float),
                          motif_freq=np.array([mo[m] for m in motifs], float), n_scanned=n_scan)


def library_corpus(scaffolds: Sequence[str], motifs: Sequence[str], n_private: int = 30, n_shadows: int = 2,
                   owner_scaffolds: int = 1, rng: np.random.Generator | None = None, seed: int = 0,
                   aux: Sequence[str] = (), decomposition: dict | None = None,
                   scaffold_freq: np.ndarray | None = None, motif_freq: np.ndarray | None = None,
                   n_scanned: int = 0) -> Corpus:
    """A focused-library world over a given vocabulary: the owner's private set is ``n_private``
    distinct molecules the prior generates on ``owner_scaffolds`` random scaffolds; each shadow
    library the same on scaffolds drawn independently (disjoint molecules). With no ``aux``
    molecules the prior is uniform over scaffolds, substituent counts and motifs (the fast test's
    world: no MOSES needed)."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    dec = dict(decomposition or {})
    base = Corpus(list(scaffolds), scaffold_freq if scaffold_freq is not None else np.ones(len(scaffolds)),
                  list(motifs), motif_freq if motif_freq is not None else np.ones(len(motifs)), [], [],
                  list(aux), dec, n_scanned)
    space = Space(base)

    def library(k: int, exclude: set[str]) -> list[str]:
        pick = rng.choice(len(scaffolds), size=min(k, len(scaffolds)), replace=False)
        sub = Space.__new__(Space)
        sub.__dict__.update(space.__dict__)
        prior = np.zeros(len(scaffolds))
        prior[pick] = space.scaffold_prior[pick]
        sub.scaffold_prior = prior / prior.sum()
        out = []
        for s, a in unique_valid(space, sub.sample_prior(30 * n_private, rng)).items():
            if s not in dec and s not in exclude:
                sc_s, subs = space.decomposition(a)
                dec[s] = (sc_s, tuple(sorted((p, m) for (p, _), m in zip(a.subs, subs))))
                out.append(s)
            if len(out) == n_private:
                break
        return out

    base.private = library(owner_scaffolds, set())
    taken = set(base.private)
    base.shadows = []
    for _ in range(n_shadows):
        sh = library(owner_scaffolds, taken)
        taken |= set(sh)
        base.shadows.append(sh)
    base.decomposition = dec
    return base


def enumerate_space(space: Space) -> dict[str, Action]:
    """Every distinct valid molecule of a (small) space -> one action building it.

    For the library world (tens of thousands of action sets) this is seconds; it lets the search
    be studied against the score of every reachable molecule (what an unlimited budget would see).
    """
    out: dict[str, Action] = {}
    M = len(space.motifs)
    for s, pos in enumerate(space.positions):
        for i, p in enumerate(pos):
            for m in range(M):
                a = Action(s, ((int(p), m),))
                smi = space.smiles(a)
                if smi is not None and smi not in out:
                    out[smi] = a
            for q in pos[i + 1:]:
                for m1 in range(M):
                    for m2 in range(M):
                        a = Action(s, ((int(p), m1), (int(q), m2)))
                        smi = space.smiles(a)
                        if smi is not None and smi not in out:
                            out[smi] = a
    return out


def log_prior(space: Space, a: Action) -> float:
    """log probability of ``a``'s molecule path under the auxiliary prior: scaffold, substituent
    count, motifs, and a uniform choice of the atoms (one path; symmetric paths are not summed)."""
    P = len(space.positions[a.scaffold])
    k = len(a.subs)
    v = float(np.log(space.scaffold_prior[a.scaffold]))
    if P > 1:
        v += float(np.log(space.n_prior[k - 1]))
    v += float(sum(np.log(space.motif_prior[m]) for _, m in a.subs))
    return v - float(np.log(P if k == 1 else P * (P - 1) / 2))
