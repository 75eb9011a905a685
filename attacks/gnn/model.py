"""Molecular graphs, the GIN encoder, its three pretraining families, and per-molecule losses.

Featurisation follows Hu et al. (ICLR 2020, "Strategies for pre-training graph neural networks")
in spirit: categorical atom attributes (element, hydrogen count, formal charge, aromaticity) each
with a reserved MASK value, categorical bond types embedded per layer, GIN(E) layers with batch
norm, mean pooling. Pretraining families (the three the paper attacks):

* ``attrmask`` (reconstruction): mask 15 % of atoms, predict element and hydrogen count.
* ``graphcl`` (contrastive, You et al. 2020): two views by attribute masking + edge dropping,
  projection head, NT-Xent.
* ``edgepred`` (context prediction, Hamilton et al./Hu et al.): dot products of node embeddings
  separate bonded atom pairs from random non-bonded pairs.

``molecule_loss`` evaluates a released checkpoint's own pretraining loss on one molecule at a
time, under augmentations drawn from a generator seeded by the molecule itself (so a molecule's
score never depends on what else is in the batch or on call order). Lower means "looks like
something the encoder was trained on": the membership signal the attack builds on.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from secureml.errors import DataError

ELEMENTS = (6, 7, 8, 9, 16, 17, 35, 15, 53, 5, 14, 34)  # MOSES uses C N O F S Cl Br; the rest spare
N_ELEM = len(ELEMENTS) + 1  # last: other
N_HS, N_CHG, N_AROM = 5, 3, 2
# attribute vocab sizes; index == size is the MASK token
ATTR_SIZES = (N_ELEM, N_HS, N_CHG, N_AROM)
N_BOND = 4  # single, double, triple, aromatic
FAMILIES = ("attrmask", "graphcl", "edgepred")


@dataclass
class Graph:
    x: torch.Tensor  # (n, 4) long
    edge_index: torch.Tensor  # (2, 2m) long, both directions
    edge_attr: torch.Tensor  # (2m,) long
    smiles: str


def featurise(smiles: str) -> Graph:
    from rdkit import Chem

    m = Chem.MolFromSmiles(smiles)
    if m is None:
        raise DataError(f"RDKit cannot parse {smiles!r}")
    x = []
    for a in m.GetAtoms():
        z = a.GetAtomicNum()
        e = ELEMENTS.index(z) if z in ELEMENTS else N_ELEM - 1
        x.append((e, min(a.GetTotalNumHs(), N_HS - 1), min(max(a.GetFormalCharge() + 1, 0), 2),
                  int(a.GetIsAromatic())))
    bt = {Chem.BondType.SINGLE: 0, Chem.BondType.DOUBLE: 1, Chem.BondType.TRIPLE: 2, Chem.BondType.AROMATIC: 3}
    src, dst, attr = [], [], []
    for b in m.GetBonds():
        i, j, t = b.GetBeginAtomIdx(), b.GetEndAtomIdx(), bt.get(b.GetBondType(), 0)
        src += [i, j]
        dst += [j, i]
        attr += [t, t]
    return Graph(torch.tensor(x, dtype=torch.long), torch.tensor([src, dst], dtype=torch.long).reshape(2, -1),
                 torch.tensor(attr, dtype=torch.long), smiles)


@dataclass
class Batch:
    x: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    batch: torch.Tensor  # node -> graph
    num_graphs: int
    ptr: torch.Tensor  # (num_graphs + 1,) node offsets

    def to(self, device: Any) -> "Batch":
        return Batch(self.x.to(device), self.edge_index.to(device), self.edge_attr.to(device),
                     self.batch.to(device), self.num_graphs, self.ptr.to(device))


def collate(graphs: Sequence[Graph]) -> Batch:
    sizes = torch.tensor([g.x.shape[0] for g in graphs])
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(sizes, 0)
    ei = torch.cat([g.edge_index + ptr[k] for k, g in enumerate(graphs)], 1)
    return Batch(torch.cat([g.x for g in graphs]), ei, torch.cat([g.edge_attr for g in graphs]),
                 torch.repeat_interleave(torch.arange(len(graphs)), sizes), len(graphs), ptr)


class GIN(nn.Module):
    """``n_layers`` GIN(E) layers of width ``dim`` (paper: 5 x 300); node and graph embeddings."""

    def __init__(self, dim: int = 300, n_layers: int = 5) -> None:
        super().__init__()
        from torch_geometric.nn import GINEConv

        self.dim, self.n_layers = dim, n_layers
        self.atom_emb = nn.ModuleList([nn.Embedding(s + 1, dim) for s in ATTR_SIZES])
        self.bond_emb = nn.ModuleList([nn.Embedding(N_BOND, dim) for _ in range(n_layers)])
        self.convs = nn.ModuleList([
            GINEConv(nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim)), train_eps=True)
            for _ in range(n_layers)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(dim) for _ in range(n_layers)])

    def nodes(self, b: Batch) -> torch.Tensor:
        h = sum(emb(b.x[:, k]) for k, emb in enumerate(self.atom_emb))
        for layer in range(self.n_layers):
            h = self.norms[layer](self.convs[layer](h, b.edge_index, self.bond_emb[layer](b.edge_attr)))
            if layer < self.n_layers - 1:
                h = F.relu(h)
        return h

    def graphs(self, b: Batch, h: torch.Tensor | None = None) -> torch.Tensor:
        from torch_geometric.utils import scatter

        h = self.nodes(b) if h is None else h
        return scatter(h, b.batch, 0, dim_size=b.num_graphs, reduce="mean")


class Pretrained(nn.Module):
    """Encoder plus the head of its pretraining task: what a released checkpoint contains."""

    def __init__(self, family: str, dim: int = 300, n_layers: int = 5) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise DataError(f"unknown pretraining family {family!r}; choose from {FAMILIES}")
        self.family = family
        self.encoder = GIN(dim, n_layers)
        if family == "attrmask":
            self.head = nn.ModuleList([nn.Linear(dim, N_ELEM), nn.Linear(dim, N_HS)])
        elif family == "graphcl":
            self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        else:
            self.head = nn.Identity()


# ---------------------------------------------------------------- augmentations (generator-driven)

def _mask(b: Batch, rate: float, gen: torch.Generator) -> tuple[Batch, torch.Tensor]:
    """Mask ``rate`` of each graph's atoms (at least one); returns the masked batch and the mask."""
    n = b.x.shape[0]
    r = torch.rand(n, generator=gen)
    m = r < rate
    # guarantee one masked atom per graph: the atom with the smallest draw
    first = torch.full((b.num_graphs,), 2.0).scatter_reduce(0, b.batch, r, "amin")
    m |= r == first[b.batch]
    x = b.x.clone()
    x[m] = torch.tensor(ATTR_SIZES)
    return Batch(x, b.edge_index, b.edge_attr, b.batch, b.num_graphs, b.ptr), m


def _drop_edges(b: Batch, rate: float, gen: torch.Generator) -> Batch:
    """Drop ``rate`` of the bonds (both directions together)."""
    e = b.edge_index.shape[1] // 2
    keep = (torch.rand(e, generator=gen) >= rate).repeat_interleave(2)
    return Batch(b.x, b.edge_index[:, keep], b.edge_attr[keep], b.batch, b.num_graphs, b.ptr)


def _neg_pairs(b: Batch, gen: torch.Generator) -> torch.Tensor:
    """One random atom pair per bond, both atoms in the bond's molecule (may hit a bond: rare, harmless)."""
    src = b.edge_index[0, ::2]
    g = b.batch[src]
    lo, size = b.ptr[g], (b.ptr[g + 1] - b.ptr[g]).float()
    u = lo + (torch.rand(src.shape[0], generator=gen) * size).long()
    v = lo + (torch.rand(src.shape[0], generator=gen) * size).long()
    return torch.stack([u, v])


# ---------------------------------------------------------------- pretraining losses

def pretrain(smiles: Sequence[str], family: str, dim: int = 300, n_layers: int = 5, epochs: int = 100,
             batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device: str | None = None,
             progress: Callable[[int, float], None] | None = None) -> Pretrained:
    """Pretrain one encoder on ``smiles`` (no dropout, no weight decay: nothing holds memorisation back)."""
    torch.manual_seed(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    graphs = [featurise(s) for s in smiles]
    model = Pretrained(family, dim, n_layers).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(graphs), generator=gen).tolist()
        tot = 0.0
        for k in range(0, len(perm), batch_size):
            chunk = [graphs[i] for i in perm[k:k + batch_size]]
            if len(chunk) < 2:
                continue
            b = collate(chunk)
            loss = batch_loss(model, b, gen, dev)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(chunk)
        if progress:
            progress(ep, tot / len(graphs))
    model.eval()
    return model


def batch_loss(model: Pretrained, b: Batch, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """The family's pretraining loss on one batch; augmentations drawn on the CPU generator (any device)."""
    if model.family == "attrmask":
        mb, m = _mask(b, 0.15, gen)
        h = model.encoder.nodes(mb.to(dev))[m.to(dev)]
        y = b.x[m].to(dev)
        return F.cross_entropy(model.head[0](h), y[:, 0]) + F.cross_entropy(model.head[1](h), y[:, 1])
    if model.family == "graphcl":
        v1 = _drop_edges(_mask(b, 0.2, gen)[0], 0.2, gen).to(dev)
        v2 = _drop_edges(_mask(b, 0.2, gen)[0], 0.2, gen).to(dev)
        z1, z2 = model.head(model.encoder.graphs(v1)), model.head(model.encoder.graphs(v2))
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        sim = z1 @ z2.T / 0.1
        t = torch.arange(z1.shape[0], device=dev)
        return 0.5 * (F.cross_entropy(sim, t) + F.cross_entropy(sim.T, t))
    neg = _neg_pairs(b, gen).to(dev)
    bd = b.to(dev)
    h = model.encoder.nodes(bd)
    pos = bd.edge_index[:, ::2]
    # dot products scaled by 1/sqrt(dim): unscaled ones of batch-normed states saturate the sigmoid
    sp = (h[pos[0]] * h[pos[1]]).sum(1) / math.sqrt(h.shape[1])
    sn = (h[neg[0]] * h[neg[1]]).sum(1) / math.sqrt(h.shape[1])
    return F.binary_cross_entropy_with_logits(sp, torch.ones_like(sp)) + \
        F.binary_cross_entropy_with_logits(sn, torch.zeros_like(sn))


# ---------------------------------------------------------------- per-molecule scores

def _seed_of(smiles: str, rep: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{smiles}|{rep}".encode(), digest_size=8).digest(), "little") >> 1


@torch.no_grad()
def molecule_loss(model: Pretrained, smiles: Sequence[str], reps: int = 4, batch_size: int = 256,
                  reference: Sequence[str] | None = None) -> np.ndarray:
    """The checkpoint's own pretraining loss on each molecule, averaged over ``reps`` augmentations.

    Each molecule's augmentations come from a generator seeded by its SMILES, so the value is a
    function of (model, molecule) alone. For ``graphcl`` the negatives are a fixed set of
    ``reference`` molecules (public data), since NT-Xent needs some.
    """
    model.eval()
    dev = next(model.parameters()).device
    graphs = [featurise(s) for s in smiles]
    out = np.zeros(len(graphs))
    zref = None
    if model.family == "graphcl":
        ref = [featurise(s) for s in (reference or [])]
        if not ref:
            raise DataError("graphcl molecule_loss needs reference molecules for the negatives")
        zref = F.normalize(model.head(model.encoder.graphs(collate(ref).to(dev))), dim=1)
    if model.family == "attrmask":
        # deterministic pseudo-likelihood: every atom masked once, alone. Random 15 % masks mostly
        # hit atoms that chemistry alone predicts (ring carbons); the memorised ones are few
        for k in range(0, len(graphs), max(1, batch_size // 16)):
            chunk = graphs[k:k + max(1, batch_size // 16)]
            out[k:k + len(chunk)] = _attrmask_pll(model, chunk, dev).numpy()
        return out
    for k in range(0, len(graphs), batch_size):
        chunk = graphs[k:k + batch_size]
        b = collate(chunk)
        acc = torch.zeros(len(chunk))
        for rep in range(reps):
            # one generator per molecule: draw each molecule's randomness separately, then stitch
            gens = [torch.Generator().manual_seed(_seed_of(g.smiles, rep)) for g in chunk]
            acc += _per_graph(model, b, chunk, gens, zref, dev)
        out[k:k + len(chunk)] = (acc / reps).numpy()
    return out


def _attrmask_pll(model: Pretrained, chunk: Sequence[Graph], dev: torch.device) -> torch.Tensor:
    copies = [g for g in chunk for _ in range(g.x.shape[0])]
    b = collate(copies)
    which = torch.cat([torch.arange(g.x.shape[0]) for g in chunk])  # atom masked in each copy
    idx = b.ptr[:-1] + which
    x = b.x.clone()
    x[idx] = torch.tensor(ATTR_SIZES)
    h = model.encoder.nodes(Batch(x, b.edge_index, b.edge_attr, b.batch, b.num_graphs, b.ptr).to(dev))[idx.to(dev)]
    y = b.x[idx].to(dev)
    ce = (F.cross_entropy(model.head[0](h), y[:, 0], reduction="none") +
          F.cross_entropy(model.head[1](h), y[:, 1], reduction="none")).cpu()
    owner = torch.repeat_interleave(torch.arange(len(chunk)), torch.tensor([g.x.shape[0] for g in chunk]))
    # the worst-predicted atom: a near-miss candidate differs from a member in one substituent, and
    # that one atom's loss is what gives it away (a mean over ~20 atoms dilutes it)
    return torch.zeros(len(chunk)).scatter_reduce(0, owner, ce, "amax", include_self=False)


def _per_graph(model: Pretrained, b: Batch, chunk: Sequence[Graph], gens: list[torch.Generator],
               zref: torch.Tensor | None, dev: torch.device) -> torch.Tensor:
    n_nodes = [g.x.shape[0] for g in chunk]
    n_edges = [g.edge_index.shape[1] // 2 for g in chunk]
    r_nodes = torch.cat([torch.rand(n, generator=gg) for n, gg in zip(n_nodes, gens)])
    if model.family == "attrmask":
        m = r_nodes < 0.15
        first = torch.full((b.num_graphs,), 2.0).scatter_reduce(0, b.batch, r_nodes, "amin")
        m |= r_nodes == first[b.batch]
        x = b.x.clone()
        x[m] = torch.tensor(ATTR_SIZES)
        mb = Batch(x, b.edge_index, b.edge_attr, b.batch, b.num_graphs, b.ptr).to(dev)
        h = model.encoder.nodes(mb)[m.to(dev)]
        y = b.x[m].to(dev)
        ce = F.cross_entropy(model.head[0](h), y[:, 0], reduction="none") + \
            F.cross_entropy(model.head[1](h), y[:, 1], reduction="none")
        return torch.zeros(b.num_graphs).index_add_(0, b.batch[m], ce.cpu()) / \
            torch.bincount(b.batch[m], minlength=b.num_graphs).clamp(min=1)
    if model.family == "graphcl":
        views = []
        for _ in range(2):
            rm = torch.cat([torch.rand(n, generator=gg) for n, gg in zip(n_nodes, gens)])
            re = torch.cat([torch.rand(e, generator=gg) for e, gg in zip(n_edges, gens)])
            x = b.x.clone()
            x[rm < 0.2] = torch.tensor(ATTR_SIZES)
            keep = (re >= 0.2).repeat_interleave(2)
            v = Batch(x, b.edge_index[:, keep], b.edge_attr[keep], b.batch, b.num_graphs, b.ptr).to(dev)
            views.append(F.normalize(model.head(model.encoder.graphs(v)), dim=1))
        z1, z2 = views
        pos = (z1 * z2).sum(1, keepdim=True) / 0.1
        neg = z1 @ zref.T / 0.1
        return (torch.logsumexp(torch.cat([pos, neg], 1), 1) - pos[:, 0]).cpu()
    # edgepred: per-molecule BCE over its bonds and as many random atom pairs
    src = b.edge_index[0, ::2]
    g = b.batch[src]
    r_u = torch.cat([torch.rand(e, generator=gg) for e, gg in zip(n_edges, gens)])
    r_v = torch.cat([torch.rand(e, generator=gg) for e, gg in zip(n_edges, gens)])
    lo, size = b.ptr[g], (b.ptr[g + 1] - b.ptr[g]).float()
    neg = torch.stack([lo + (r_u * size).long(), lo + (r_v * size).long()])
    h = model.encoder.nodes(b.to(dev)).cpu()
    pos = b.edge_index[:, ::2]
    # dot products scaled by 1/sqrt(dim): unscaled ones of batch-normed states saturate the sigmoid
    sp = (h[pos[0]] * h[pos[1]]).sum(1) / math.sqrt(h.shape[1])
    sn = (h[neg[0]] * h[neg[1]]).sum(1) / math.sqrt(h.shape[1])
    per = F.binary_cross_entropy_with_logits(sp, torch.ones_like(sp), reduction="none") + \
        F.binary_cross_entropy_with_logits(sn, torch.zeros_like(sn), reduction="none")
    return torch.zeros(b.num_graphs).index_add_(0, g, per) / torch.bincount(g, minlength=b.num_graphs).clamp(min=1)


@torch.no_grad()
def embed(model: Pretrained, smiles: Sequence[str], batch_size: int = 512) -> np.ndarray:
    """Graph embeddings (mean-pooled final node states) of unaugmented molecules."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for k in range(0, len(smiles), batch_size):
        b = collate([featurise(s) for s in smiles[k:k + batch_size]]).to(dev)
        out.append(model.encoder.graphs(b).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.encoder.dim))


def n_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))



def cached_pretrain(smiles: Sequence[str], family: str, tag: str, dim: int = 300, n_layers: int = 5,
                    epochs: int = 100, lr: float = 1e-3, seed: int = 0, device: str | None = None,
                    progress: bool = False, batch_size: int = 64) -> Pretrained:
    """``pretrain`` with the checkpoint kept under ``$SECUREML_CACHE/gnn`` (keyed by data and recipe)."""
    import os
    from pathlib import Path

    h = hashlib.blake2b("\n".join(smiles).encode(), digest_size=8).hexdigest()
    root = Path(os.environ.get("SECUREML_CACHE", Path.home() / ".cache" / "secureml")) / "gnn"
    path = root / f"{tag}_{family}_d{dim}_l{n_layers}_e{epochs}_b{batch_size}_lr{lr:g}_s{seed}_{h}.pt"
    if path.exists():
        model = Pretrained(family, dim, n_layers)
        model.load_state_dict(torch.load(path, map_location="cpu"))
        model.eval()
        return model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
    cb = None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs, desc=f"pretrain {family} ({tag}, {len(smiles)} mol)", unit="epoch")

        def cb(ep: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
    model = pretrain(smiles, family, dim, n_layers, epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                     progress=cb)
    if bar is not None:
        bar.close()
    root.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)
    return model
