"""MOSES SMILES read from the installed ``molsets`` wheel, and their scaffold + motif decomposition.

``molsets`` (MOSES, Polykovskiy et al. 2020) ships ~1.58 million ZINC-derived drug-like SMILES in
``moses/dataset/data/train.csv.gz``. Its own loader imports long-removed dependencies, so, as with
qm9pack for QM9, we never import ``moses`` and only locate its data folder.

A molecule is decomposed the way the attack builds molecules: its Bemis-Murcko scaffold (ring
systems and the linkers between them, RDKit's ``MurckoScaffold``) plus side chains ("motifs"),
each hanging from one scaffold atom by a single bond. ``decompose`` returns the canonical scaffold
SMILES and a tuple of (scaffold atom index, motif SMILES with one ``*``), where the atom index
refers to ``Chem.MolFromSmiles(scaffold)``; ``attach`` rebuilds the molecule from exactly that,
so a molecule whose scaffold and motifs are in the attacker's vocabulary is reachable by the
generator (checked, not assumed: ``decompose`` verifies the round trip).
"""
from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from secureml.errors import DataError


def moses_path(split: str = "train") -> Path:
    spec = importlib.util.find_spec("moses")
    if spec is None or spec.origin is None:
        raise DataError("molsets is not installed (the Makefile installs it with --no-deps)")
    p = Path(spec.origin).parent / "dataset" / "data" / f"{split}.csv.gz"
    if not p.exists():
        raise DataError(f"molsets has no {p.name} at {p}")
    return p


@lru_cache(maxsize=2)
def load_moses(split: str = "train") -> tuple[str, ...]:
    """All SMILES of one MOSES split, in file order (about 2 s for the 1.58 M training SMILES)."""
    with gzip.open(moses_path(split), "rt") as f:
        rows = csv.reader(f)
        header = next(rows)
        if not header or header[0].upper() != "SMILES":
            raise DataError(f"unexpected MOSES header {header!r}")
        return tuple(r[0] for r in rows if r)


def _rdkit():  # type: ignore[no-untyped-def]
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # invalid candidates are expected; their errors are noise
    return Chem


def canonical(smiles: str) -> str | None:
    """Canonical SMILES without stereochemistry, or None if RDKit cannot parse it."""
    Chem = _rdkit()
    m = Chem.MolFromSmiles(smiles)
    if m is None:
        return None
    Chem.RemoveStereochemistry(m)
    return Chem.MolToSmiles(m)


@lru_cache(maxsize=100_000)
def _mol(smiles: str):  # type: ignore[no-untyped-def]
    return _rdkit().MolFromSmiles(smiles)


def attach(scaffold: str, subs: Sequence[tuple[int, str]]) -> str | None:
    """Canonical SMILES of ``scaffold`` with each motif bonded (single bond) to its scaffold atom.

    Returns None when the result violates valences (RDKit sanitisation fails) or an atom has no
    hydrogen to replace.
    """
    Chem = _rdkit()
    core = _mol(scaffold)
    if core is None:
        return None
    rw = Chem.RWMol(core)
    for pos, motif in subs:
        if pos >= core.GetNumAtoms():
            return None
        frag = _mol(motif)
        if frag is None:
            return None
        if core.GetAtomWithIdx(pos).GetTotalNumHs() < 1:
            return None
        a = rw.GetAtomWithIdx(pos)
        if a.GetNumExplicitHs() > 0:  # [nH] and the like: the new bond replaces the written H
            a.SetNumExplicitHs(a.GetNumExplicitHs() - 1)
        offset = rw.GetNumAtoms()
        dummy = None
        for atom in frag.GetAtoms():
            if atom.GetAtomicNum() == 0:
                dummy = atom.GetIdx()
            rw.AddAtom(atom)
        if dummy is None:
            return None
        for b in frag.GetBonds():
            rw.AddBond(b.GetBeginAtomIdx() + offset, b.GetEndAtomIdx() + offset, b.GetBondType())
        nb = frag.GetAtomWithIdx(dummy).GetNeighbors()
        if len(nb) != 1:
            return None
        rw.AddBond(pos, nb[0].GetIdx() + offset, Chem.BondType.SINGLE)
        rw.RemoveAtom(dummy + offset)
    m = rw.GetMol()
    try:
        Chem.SanitizeMol(m)
    except Exception:  # any sanitisation failure (valence, kekulisation) means "not a molecule"
        return None
    Chem.RemoveStereochemistry(m)
    return Chem.MolToSmiles(m)


def decompose(smiles: str) -> tuple[str, tuple[tuple[int, str], ...]] | None:
    """(canonical scaffold, ((scaffold atom, motif), ...)) such that ``attach`` rebuilds the molecule.

    None for acyclic molecules, side chains bonded by anything but one single bond, or when the
    round trip does not give the same canonical SMILES.
    """
    Chem = _rdkit()
    from rdkit.Chem.Scaffolds import MurckoScaffold

    m = Chem.MolFromSmiles(smiles)
    if m is None:
        return None
    Chem.RemoveStereochemistry(m)
    target = Chem.MolToSmiles(m)
    sc = MurckoScaffold.GetScaffoldForMol(m)
    if sc.GetNumAtoms() == 0:
        return None
    scaf = Chem.MolToSmiles(sc)
    core = Chem.MolFromSmiles(scaf)
    if core is None:
        return None
    side = Chem.ReplaceCore(m, core, labelByIndex=True)
    if side is None:
        return None
    subs = []
    if side.GetNumAtoms():
        for fr in Chem.GetMolFrags(side, asMols=True, sanitizeFrags=False):
            dummies = [a for a in fr.GetAtoms() if a.GetAtomicNum() == 0]
            if len(dummies) != 1:
                return None
            pos = dummies[0].GetIsotope()
            dummies[0].SetIsotope(0)
            try:
                Chem.SanitizeMol(fr)
            except Exception:
                return None
            subs.append((pos, Chem.MolToSmiles(fr)))
    subs_t = tuple(sorted(subs))
    if attach(scaf, subs_t) != target:
        return None
    return scaf, subs_t


@dataclass
class Corpus:
    """The attack's world: private (pretraining) set, shadow sets, vocabularies, all disjoint.

    ``population`` are MOSES molecules with a vocabulary scaffold and 1-2 vocabulary motifs: the
    part of MOSES the generator can reach. ``private`` (the model owner's pretraining set) and the
    attacker's ``shadow`` sets are drawn from it without overlap; ``aux`` (everything else the
    attacker holds, which defines the vocabularies) never contains a private molecule.
    """

    scaffolds: list[str]
    scaffold_freq: np.ndarray  # in the attacker's auxiliary data (the generator's prior)
    motifs: list[str]
    motif_freq: np.ndarray
    private: list[str]
    shadows: list[list[str]]
    aux: list[str]  # auxiliary molecules (disjoint from private): the "random auxiliary" baseline
    decomposition: dict[str, tuple[str, tuple[tuple[int, str], ...]]] = field(default_factory=dict)
    n_scanned: int = 0


def _scaffold_only(smiles: str) -> str | None:
    Chem = _rdkit()
    from rdkit.Chem.Scaffolds import MurckoScaffold

    m = Chem.MolFromSmiles(smiles)
    if m is None:
        return None
    Chem.RemoveStereochemistry(m)
    return Chem.MolToSmiles(MurckoScaffold.GetScaffoldForMol(m))


def build_corpus(n_private: int = 500, n_shadows: int = 2, n_scaffolds: int = 100, n_motifs: int = 30,
                 n_scan: int = 300_000, seed: int = 0, progress: bool = False) -> Corpus:
    """Sample ``n_scan`` MOSES molecules and split them into the attack's sets.

    Half the scan is the attacker's auxiliary data; the vocabularies come from it alone (the
    attacker never sees the private set): the ``n_scaffolds`` most frequent scaffolds and the
    ``n_motifs`` most frequent motifs among auxiliary molecules carrying those scaffolds. Only
    molecules with a vocabulary scaffold are fully decomposed (the scaffold alone is 5x cheaper).
    The result is cached as JSON under ``$SECUREML_CACHE`` (default ``~/.cache/secureml``).
    """
    key = f"gnn_corpus_v1_{n_private}_{n_shadows}_{n_scaffolds}_{n_motifs}_{n_scan}_{seed}.json"
    cache = Path(os.environ.get("SECUREML_CACHE", Path.home() / ".cache" / "secureml")) / key
    if cache.exists():
        d = json.loads(cache.read_text())
        d["scaffold_freq"] = np.array(d["scaffold_freq"])
        d["motif_freq"] = np.array(d["motif_freq"])
        d["decomposition"] = {k: (v[0], tuple((int(p), m) for p, m in v[1])) for k, v in d["decomposition"].items()}
        return Corpus(**d)
    smiles = load_moses("train")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(smiles), size=min(n_scan, len(smiles)), replace=False)
    half = len(idx) // 2

    def bar(seq, desc):  # type: ignore[no-untyped-def]
        if not progress:
            return seq
        from tqdm import tqdm

        return tqdm(seq, desc=desc, unit="mol", mininterval=2)

    scaf = {int(i): _scaffold_only(smiles[int(i)]) for i in bar(idx, "MOSES scaffolds")}
    sc_count = Counter(scaf[int(i)] for i in idx[:half] if scaf[int(i)])
    scaffolds = [s for s, _ in sc_count.most_common(n_scaffolds)]
    sset = set(scaffolds)
    dec: dict[str, tuple[str, tuple[tuple[int, str], ...]]] = {}
    side: dict[int, str] = {}
    for i in bar([i for i in idx if scaf[int(i)] in sset], "decomposing"):
        d = decompose(smiles[int(i)])
        if d is not None and d[0] in sset:
            c = attach(*d)
            if c is not None and c not in dec:
                dec[c] = d
                side[int(i)] = c
    aux_set = {side[int(i)] for i in idx[:half] if int(i) in side}
    mo_count = Counter(m for s in aux_set for _, m in dec[s][1])
    motifs = [m for m, _ in mo_count.most_common(n_motifs)]
    mset = set(motifs)

    def reachable(s: str) -> bool:
        subs = dec[s][1]
        return 1 <= len(subs) <= 2 and all(m in mset for _, m in subs) and len({p for p, _ in subs}) == len(subs)

    rest = sorted({side[int(i)] for i in idx[half:] if int(i) in side} - aux_set)
    pop = [rest[k] for k in rng.permutation(len(rest)) if reachable(rest[k])]
    need = n_private * (1 + n_shadows)
    if len(pop) < need:
        raise DataError(f"only {len(pop)} reachable molecules in {n_scan} scanned; need {need}: raise n_scan")
    corpus = Corpus(
        scaffolds=scaffolds,
        scaffold_freq=np.array([sc_count[s] for s in scaffolds], dtype=float),
        motifs=motifs,
        motif_freq=np.array([mo_count[m] for m in motifs], dtype=float),
        private=pop[:n_private],
        shadows=[pop[n_private * (k + 1): n_private * (k + 2)] for k in range(n_shadows)],
        aux=sorted(aux_set), decomposition={s: dec[s] for s in aux_set | set(pop[:need])}, n_scanned=len(idx),
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    d = dict(corpus.__dict__)
    d["scaffold_freq"] = corpus.scaffold_freq.tolist()
    d["motif_freq"] = corpus.motif_freq.tolist()
    cache.write_text(json.dumps(d))
    return corpus


def focus(corpus: Corpus, n_owner_scaffolds: int = 4, top: int = 12, seed: int = 0) -> Corpus:
    """A focused-library owner: the private set is every pooled molecule on a few scaffolds.

    Pretraining sets in chemistry are often series around a handful of scaffolds; the owner here
    picks ``n_owner_scaffolds`` at random among the ``top`` most common scaffolds of the reachable
    pool, and the private set is all pooled (natural MOSES, never auxiliary) molecules on them.
    The attacker's two shadow sets are built the same way from its own auxiliary molecules, on
    scaffolds it draws without knowing the owner's (they may coincide; nothing is excluded).
    """
    rng = np.random.default_rng(seed + 1000)
    pool = corpus.private + [s for sh in corpus.shadows for s in sh]
    dec = corpus.decomposition
    cnt = Counter(dec[s][0] for s in pool)
    cand = [s for s, _ in cnt.most_common(top)]
    owner = set(rng.choice(cand, size=n_owner_scaffolds, replace=False).tolist())
    private = [s for s in pool if dec[s][0] in owner]
    sset, mset = set(corpus.scaffolds), set(corpus.motifs)
    aux_ok = [s for s in corpus.aux if dec[s][0] in sset and 1 <= len(dec[s][1]) <= 2
              and all(m in mset for _, m in dec[s][1]) and len({p for p, _ in dec[s][1]}) == len(dec[s][1])]
    acnt = Counter(dec[s][0] for s in aux_ok)
    acand = [s for s, _ in acnt.most_common(top)]
    shadows = []
    for _ in range(len(corpus.shadows)):
        pick = set(rng.choice(acand, size=n_owner_scaffolds, replace=False).tolist())
        shadows.append([s for s in aux_ok if dec[s][0] in pick])
    return Corpus(corpus.scaffolds, corpus.scaffold_freq, corpus.motifs, corpus.motif_freq, private, shadows,
                  corpus.aux, dec, corpus.n_scanned)
