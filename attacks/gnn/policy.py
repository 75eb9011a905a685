"""The generator's policy: a factorised softmax over scaffold + motif actions, trained by RL.

Actions (:mod:`attacks.gnn.space`): scaffold s, number of substituents n in {1, 2}, then for each
substituent a (scaffold atom, motif) pair on a free hydrogen-bearing atom. The policy keeps one
logit table per decision -- scaffold, n given s, (atom, motif) given s -- started from the
attacker's auxiliary prior (so the untrained policy *is* random generation).

Two trainers share it (:func:`policy_search`):

* ``reinforce``: REINFORCE with a moving (exponential) reward baseline and per-batch advantage
  normalisation;
* ``ppo``: the clipped surrogate of PPO (Schulman et al. 2017), a few epochs per batch.

Both add what the first version (kept as :func:`reinforce_v1`) lacked, each for a diagnosed
failure (docs/gnn-extraction.md, "Why the first policy lost to the score"):

1. **KL to the prior** (coefficient ``kl``): members are drawn from the same distribution as the
   attacker's auxiliary data, so a molecule the prior finds unlikely is a worse bet at equal
   score; without it the policy drifts to high-scoring but implausible substituent patterns.
2. **Self-imitation of the best molecules scored so far** (Oh et al., ICML 2018; ``imitate``):
   the score is noisy and a batch of 32 rarely contains a member, so the policy gradient alone
   forgets a good region as soon as it has sampled it once.
3. **Exploration around the top-scored actions** (``explore``): a share of each batch are one-edit
   neighbours (another motif, another atom, one substituent more or less) of the current top
   molecules -- extraction wants *many distinct* high-scoring molecules, and the members of a
   scaffold series are each other's neighbours.
4. **Duplicates** earn a fixed penalty instead of a z-scored reward, and the search never stops
   early: when on-policy sampling stalls, the batch is filled from the exploration step, so every
   method spends the same budget of distinct scored molecules.

The reward of a molecule is its score standardised by the running mean and standard deviation of
every score seen so far (the score's scale differs between encoders and scoring functions).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from attacks.gnn.space import Action, Space


class TabularPolicy(torch.nn.Module):
    """Independent softmax logits: scaffold, substituent count per scaffold, (atom, motif) per scaffold."""

    def __init__(self, space: Space) -> None:
        super().__init__()
        self.space = space
        M = len(space.motifs)
        self.M = M
        self.ls = torch.nn.Parameter(torch.tensor(np.log(space.scaffold_prior), dtype=torch.float32))
        self.ln = torch.nn.Parameter(torch.tensor(np.tile(np.log(space.n_prior), (len(space.scaffolds), 1)),
                                                  dtype=torch.float32))
        lm = torch.tensor(np.log(space.motif_prior), dtype=torch.float32)
        self.lpm = torch.nn.ParameterList([torch.nn.Parameter(lm.repeat(len(p), 1).clone()) for p in space.positions])
        # the prior, for the KL term (the initial logits)
        self.register_buffer("ls0", self.ls.detach().clone())
        self.register_buffer("ln0", self.ln.detach().clone())
        self.lpm0 = [p.detach().clone() for p in self.lpm]
        self.pos_index = [{int(p): i for i, p in enumerate(pos)} for pos in space.positions]

    # ------------------------------------------------------------ sampling and likelihood
    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator) -> list[Action]:
        """``n`` actions; substituents listed in the order they were drawn (``log_prob`` needs it)."""
        acts = []
        s_idx = torch.multinomial(F.softmax(self.ls, 0), n, replacement=True, generator=gen).tolist()
        for s in s_idx:
            pos = self.space.positions[s]
            pn = F.softmax(self.ln[s], 0) if len(pos) > 1 else torch.tensor([1.0, 0.0])
            k = int(torch.multinomial(pn, 1, generator=gen)) + 1
            logits = self.lpm[s].reshape(-1)
            used = torch.zeros(len(pos), dtype=torch.bool)
            subs = []
            for _ in range(k):
                pr = F.softmax(logits.masked_fill(used.repeat_interleave(self.M), float("-inf")), 0)
                j = int(torch.multinomial(pr, 1, generator=gen))
                pi, mi = divmod(j, self.M)
                used[pi] = True
                subs.append((int(pos[pi]), mi))
            acts.append(Action(s, tuple(subs)))
        return acts

    def log_prob(self, acts: list[Action]) -> torch.Tensor:
        """log pi(a) for actions whose substituents are in drawing order (a sum over both orders
        would be the molecule's probability; the policy gradient needs the sampled path's)."""
        lps = F.log_softmax(self.ls, 0)
        out = []
        for a in acts:
            pos = self.space.positions[a.scaffold]
            lp = lps[a.scaffold]
            if len(pos) > 1:
                lp = lp + F.log_softmax(self.ln[a.scaffold], 0)[len(a.subs) - 1]
            logits = self.lpm[a.scaffold].reshape(-1)
            used = torch.zeros(len(pos), dtype=torch.bool)
            for p, m in a.subs:
                pi = self.pos_index[a.scaffold][p]
                lpr = F.log_softmax(logits.masked_fill(used.repeat_interleave(self.M), float("-inf")), 0)
                lp = lp + lpr[pi * self.M + m]
                used[pi] = True
            out.append(lp)
        return torch.stack(out)

    # ------------------------------------------------------------ regularisers (analytic, whole table)
    def kl_to_prior(self) -> torch.Tensor:
        """KL(pi || prior) of the scaffold choice plus the pi-weighted per-scaffold KLs of the
        substituent count and the first (atom, motif) choice."""
        ps = F.softmax(self.ls, 0)
        kl = (ps * (F.log_softmax(self.ls, 0) - F.log_softmax(self.ls0, 0))).sum()
        per = []
        for s in range(len(self.lpm)):
            a, a0 = self.lpm[s].reshape(-1), self.lpm0[s].reshape(-1)
            pa = F.softmax(a, 0)
            k = (pa * (F.log_softmax(a, 0) - F.log_softmax(a0, 0))).sum()
            pn = F.softmax(self.ln[s], 0)
            k = k + (pn * (F.log_softmax(self.ln[s], 0) - F.log_softmax(self.ln0[s], 0))).sum()
            per.append(k)
        return kl + (ps * torch.stack(per)).sum()

    def entropy(self) -> torch.Tensor:
        ps = F.softmax(self.ls, 0)
        h = -(ps * F.log_softmax(self.ls, 0)).sum()
        hm = torch.stack([-(F.softmax(p.reshape(-1), 0) * F.log_softmax(p.reshape(-1), 0)).sum() for p in self.lpm])
        return h + (ps * hm).sum()


def neighbours(space: Space, a: Action, rng: np.random.Generator, n: int) -> list[Action]:
    """``n`` random one-edit neighbours of ``a``: another motif at one site, the same motif on
    another free atom, one substituent added (prior motif) or removed."""
    out = []
    pos = space.positions[a.scaffold]
    for _ in range(n):
        subs = list(a.subs)
        free = [int(p) for p in pos if int(p) not in {q for q, _ in subs}]
        kind = rng.integers(4)
        j = int(rng.integers(len(subs)))
        if kind == 0 or (kind == 1 and not free) or (kind == 2 and (len(subs) >= 2 or not free)) or \
                (kind == 3 and len(subs) < 2):
            subs[j] = (subs[j][0], int(rng.choice(len(space.motifs), p=space.motif_prior)))
        elif kind == 1:
            subs[j] = (int(rng.choice(free)), subs[j][1])
        elif kind == 2:
            subs.append((int(rng.choice(free)), int(rng.choice(len(space.motifs), p=space.motif_prior))))
        else:
            subs.pop(j)
        out.append(Action(a.scaffold, tuple(subs)))
    return out


def scan_scaffolds(space: Space, ev: Any, per_scaffold: int, rng: np.random.Generator) -> np.ndarray:
    """Mean score of ``per_scaffold`` prior molecules of every scaffold (NaN where none is valid)."""
    means = np.full(len(space.scaffolds), np.nan)
    for k in range(len(space.scaffolds)):
        one = Space.__new__(Space)
        one.__dict__.update(space.__dict__)
        one.scaffold_prior = np.eye(len(space.scaffolds))[k]
        vals = [v for v in ev(one.sample_prior(per_scaffold, rng)) if v is not None]
        if vals:
            means[k] = float(np.mean(vals))
    return means


def policy_search(space: Space, ev: Any, algo: str = "reinforce", batch: int = 32, lr: float = 0.05,
                  entropy: float = 0.0, kl: float = 0.05, imitate: float = 0.0, n_elite: int = 32,
                  explore: float = 0.0, dup_reward: float = -1.0, baseline_decay: float = 0.9,
                  ppo_epochs: int = 4, ppo_clip: float = 0.2, scan_per_scaffold: int = 3, scan_weight: float = 1.0,
                  max_steps: int = 10_000, seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train the policy on ``ev``'s score until ``ev.budget`` distinct molecules are scored.

    Steps per iteration:

    1. draw ``batch`` actions from the policy and ``explore x batch`` one-edit neighbours of the
       ``n_elite`` best molecules scored so far; score the new ones (``ev`` caches by SMILES);
    2. rewards of the on-policy actions: z-scored score, ``dup_reward`` for a molecule already
       scored, -3 for an invalid one; advantage = reward - moving baseline, divided by the batch's
       standard deviation; the baseline then moves towards the batch mean;
    3. loss = policy-gradient term (REINFORCE, or PPO's clipped ratio over ``ppo_epochs`` passes)
       + ``kl`` x KL(pi || prior) - ``entropy`` x H(pi) - ``imitate`` x mean log pi(elite actions);
       one Adam step per pass.

    Before step 1 of the first iteration, ``scan_per_scaffold`` prior molecules of every scaffold
    are scored and the scaffold logits shifted by ``scan_weight`` x their standardised mean score.
    """
    if algo not in ("reinforce", "ppo"):
        raise ValueError(f"unknown policy algorithm {algo!r}: reinforce or ppo")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pol = TabularPolicy(space)
    if scan_per_scaffold > 0:
        means = scan_scaffolds(space, ev, scan_per_scaffold, rng)
        ok = np.isfinite(means)
        if ok.sum() > 1:
            z = np.where(ok, (means - np.nanmean(means)) / (np.nanstd(means) + 1e-9), -3.0)
            with torch.no_grad():
                pol.ls += torch.tensor(scan_weight * z, dtype=torch.float32)
        if progress:
            progress(ev.used)
    opt = torch.optim.Adam(pol.parameters(), lr=lr)
    baseline = 0.0
    hist = []
    stall = 0
    for step in range(max_steps):
        if ev.used >= ev.budget or stall >= 50:
            break
        before_n = ev.used
        acts = pol.sample(batch, gen)
        elite = ev.top_actions(n_elite)
        ex = []
        if elite and explore > 0:
            # more exploration when the policy stops finding new molecules
            n_ex = int(round(explore * batch)) + (batch if step > 0 and hist and hist[-1]["new"] == 0 else 0)
            for k in rng.integers(len(elite), size=n_ex):
                ex += neighbours(space, elite[int(k)], rng, 1)
        seen_before = set(ev.cache)
        vals = ev(acts + ex)[:len(acts)]
        allv = np.fromiter(ev.cache.values(), float)
        mu, sd = float(allv.mean()), float(allv.std()) + 1e-9
        r, seen = [], set()
        for a, v in zip(acts, vals):
            smi = space.smiles(a)
            if v is None:
                r.append(-3.0)
            elif smi in seen_before or smi in seen:
                r.append(dup_reward)
            else:
                r.append((v - mu) / sd)
            if smi is not None:
                seen.add(smi)
        rt = torch.tensor(r, dtype=torch.float32)
        adv = rt - baseline
        adv = adv / (adv.std() + 1e-6)
        baseline = baseline_decay * baseline + (1 - baseline_decay) * float(rt.mean())
        elite = ev.top_actions(n_elite)
        passes = ppo_epochs if algo == "ppo" else 1
        old = None
        for _ in range(passes):
            logp = pol.log_prob(acts)
            if algo == "ppo":
                if old is None:
                    old = logp.detach()
                ratio = torch.exp(logp - old)
                pg = -torch.min(ratio * adv, ratio.clamp(1 - ppo_clip, 1 + ppo_clip) * adv).mean()
            else:
                pg = -(adv * logp).mean()
            loss = pg + kl * pol.kl_to_prior() - entropy * pol.entropy()
            if imitate > 0 and elite:
                loss = loss - imitate * pol.log_prob(elite).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        new = ev.used - before_n
        stall = stall + 1 if new == 0 else 0
        hist.append({"step": step, "mean_reward": float(rt.mean()), "unique": ev.used, "new": new})
        if progress:
            progress(new)
    return {"steps": len(hist), "history": hist, "algo": algo}


def reinforce_v1(space: Space, ev: Any, batch: int = 16, lr: float = 0.2, entropy: float = 0.002,
                 repeat_penalty: float = 1.0, max_steps: int = 10_000, seed: int = 0, scan_per_scaffold: int = 3,
                 scan_weight: float = 3.0, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The first policy (kept to report what changed): REINFORCE with a batch-mean baseline, a
    small entropy bonus, a repeat penalty, no KL, no imitation, no exploration; it stops when a
    batch brings no new molecule after 50 steps (it collapses before the budget is spent)."""
    gen = torch.Generator().manual_seed(seed)
    pol = TabularPolicy(space)
    if scan_per_scaffold > 0:
        means = scan_scaffolds(space, ev, scan_per_scaffold, np.random.default_rng(seed))
        ok = np.isfinite(means)
        if ok.sum() > 1:
            z = np.where(ok, (means - np.nanmean(means)) / (np.nanstd(means) + 1e-9), -3.0)
            with torch.no_grad():
                pol.ls += torch.tensor(scan_weight * z, dtype=torch.float32)
    opt = torch.optim.Adam(pol.parameters(), lr=lr)
    hist = []
    for step in range(max_steps):
        if ev.used >= ev.budget:
            break
        before = set(ev.cache)
        before_n = ev.used
        acts = pol.sample(batch, gen)
        vals = ev(acts)
        allv = np.fromiter(ev.cache.values(), float) if ev.cache else np.zeros(1)
        mu, sd = float(allv.mean()), float(allv.std()) + 1e-9
        r, seen = [], set()
        for a, v in zip(acts, vals):
            smi = space.smiles(a)
            if v is None:
                r.append(-3.0)
                continue
            z = (v - mu) / sd
            if smi in before or smi in seen:
                z -= repeat_penalty
            seen.add(smi)
            r.append(z)
        rt = torch.tensor(r, dtype=torch.float32)
        logp = pol.log_prob(acts)
        loss = -((rt - rt.mean()) * logp).mean() - entropy * pol.entropy()
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append({"step": step, "mean_reward": float(rt.mean()), "unique": ev.used})
        if progress:
            progress(ev.used - before_n)
        if ev.used == before_n and step > 50:
            break
    return {"steps": len(hist), "history": hist, "algo": "reinforce-v1"}
