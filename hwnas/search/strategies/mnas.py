"""MnasNet's search (Tan et al., 2019): a controller samples architectures, rewarded by ACC·(LAT/T)^w.

The controller is a factorized policy, one categorical distribution per searchable layer, trained by
REINFORCE with a moving-average baseline. Architectures over the budget are never evaluated: their
reward uses the mean accuracy seen so far, so the controller still learns how far over the budget they
are (the MnasNet penalty) without paying for a training run. The answer is the best-reward feasible one among
those that use the budget (:meth:`hwnas.search.base.SearchContext.choose`).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from hwnas.core.schema import Positive, PositiveInt
from hwnas.search.base import Candidate, SearchContext, Strategy, checked_options
from hwnas.search.objectives import MNAS_HARD, MNAS_SOFT, mnas_reward
from hwnas.spaces.arch import Arch, num_choices

Decay = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class MnasSearch(Strategy):
    name = "mnas"

    @checked_options
    def __init__(self, batch: PositiveInt = 8, lr: Positive = 0.05, baseline_decay: Decay = 0.9,
                 hard: bool = False) -> None:
        self.batch = batch
        self.lr = lr
        self.decay = baseline_decay
        self.alpha, self.beta = MNAS_HARD if hard else MNAS_SOFT

    def run(self, ctx: SearchContext) -> Arch:
        target = ctx.budget.latency_ms or float(ctx.feasibility.smallest()["latency_ms"]) * 2
        n = num_choices(ctx.space)
        gen = torch.Generator().manual_seed(ctx.seed)
        logits = torch.zeros(len(n), int(n.max()), requires_grad=True)
        pad = torch.tensor(np.arange(int(n.max()))[None, :] >= n[:, None])
        opt = torch.optim.Adam([logits], lr=self.lr)
        baseline = None
        scores: list[float] = []

        def reward(c: Candidate) -> float:
            acc = c.score if c.score is not None else (float(np.mean(scores)) if scores else 0.0)
            return mnas_reward(acc, c.latency_ms, target, alpha=self.alpha, beta=self.beta)

        while not ctx.exhausted:
            probs = torch.softmax(logits.masked_fill(pad, -torch.inf), dim=1)
            picks = torch.multinomial(probs, self.batch, replacement=True, generator=gen).T  # (batch, layers)
            cands = ctx.evaluate(picks.numpy(), source="controller", reward=reward)
            scores += [c.score for c in cands if c.score is not None]
            r = torch.tensor([c.reward for c in cands], dtype=torch.float32)
            baseline = r.mean() if baseline is None else self.decay * baseline + (1 - self.decay) * r.mean()
            logp = torch.log(probs.gather(1, picks.T)).sum(dim=0)  # (batch,)
            loss = -((r - baseline) * logp).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return ctx.choose("reward")
