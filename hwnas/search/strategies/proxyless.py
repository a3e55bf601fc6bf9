"""ProxylessNAS (Cai et al., 2019): gradient search over binarized paths, with the expected latency in the loss.

The over-parameterized network (:class:`hwnas.search.supernet.SuperNet`) holds every candidate; each layer
has architecture parameters α (one per candidate). Training alternates:

- weight steps, on the training split: one path per layer sampled from softmax(α) (binarized), so only that
  path runs and holds activations — the memory of training one network;
- architecture steps, on the validation split (every search decision sees valid only, never test): per
  layer two paths sampled from softmax(α), one made active by a binary gate (the inactive one runs
  without autograd: with its gate at 0 nothing flows back
  through it, and its output is all its gate's gradient needs; weights take no gradient in this step, so
  it too costs about one network's training memory); the gate's gradient ∂L/∂g (BinaryConnect) gives α's
  gradient over the two,
  ∂L/∂α_i = Σ_j ∂L/∂g_j · p_j (δ_ij − p_i), and the two α are then shifted so the other paths keep their
  probabilities. The loss is ProxylessNAS's, on the unit-free ratio E[LAT]/T: CE·α·(E[LAT]/T)^β (or
  CE + λ·E[LAT]/T) where E[LAT] = Σ p·LUT comes from the table
  (:meth:`hwnas.cost.model.CostModel.expected_latency`; :func:`hwnas.search.objectives.proxyless_loss`).

The first ``warmup_epochs`` train weights only, on uniformly sampled paths. Each epoch ends with a
checkpoint in the run directory (resumable) and the derived architecture (argmax α per layer) recorded with
its supernet accuracy. The answer is the final derived architecture, pushed onto the budget if the soft
latency loss left it over (the layer swaps that cost the least log-probability per ms saved), and grown into
the budget's band if the loss left it under (the swaps that cost the least log-probability per ms gained,
:meth:`hwnas.search.budget.Feasibility.fill`): the latency term is a pull, the budget a constraint.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch
from torch import nn

from hwnas.core.schema import Finite, NonNegative, NonNegativeInt, Positive, PositiveInt
from hwnas.learn.data import Dataset
from hwnas.learn.distributed import average_gradients
from hwnas.learn.loader import loader
from hwnas.learn.loop import TrainConfig, evaluate, make_optimizer, min_batch, steps_per_epoch
from hwnas.learn.runtime import Runtime, cpu_contiguous
from hwnas.search.base import SearchContext, Strategy, checked_options
from hwnas.search.objectives import proxyless_loss
from hwnas.search.supernet import SuperNet
from hwnas.spaces.arch import Arch, num_choices


class ProxylessSearch(Strategy):
    name = "proxyless"
    scores_accuracy = True  # derived nets scored by their supernet path's accuracy on valid

    @checked_options
    def __init__(self, epochs: PositiveInt = 6, warmup_epochs: NonNegativeInt = 2, train: TrainConfig | None = None,
                 arch_lr: Positive = 6e-3, arch_every: PositiveInt = 1, loss: Literal["mul", "add"] = "mul",
                 alpha: Positive = 0.2, beta: Finite = 0.3, lam: NonNegative = 0.1) -> None:
        self.epochs = epochs
        self.warmup = min(warmup_epochs, epochs)
        self.train_cfg = train or TrainConfig(batch_size=64, lr=0.05)
        self.arch_lr = arch_lr
        self.arch_every = arch_every
        self.loss = (loss, alpha, beta, lam)

    # -- the pieces, exposed for tests and the memory benchmark ----------------------------------
    def setup(self, ctx: SearchContext, data: Dataset) -> tuple[SuperNet, torch.Tensor]:
        net = SuperNet(ctx.space, data.classes, seed=ctx.seed)
        n = num_choices(ctx.space)
        alpha = torch.zeros(len(n), int(n.max()))
        alpha[torch.tensor(np.arange(int(n.max()))[None, :] >= n[:, None])] = -torch.inf
        return net, alpha.requires_grad_(True)

    @staticmethod
    def probs(alpha: torch.Tensor) -> torch.Tensor:
        return torch.softmax(alpha, dim=1)

    @property
    def rt(self) -> Runtime:
        """Where the supernet trains (the training settings' runtime; the CPU until :meth:`run` sets it)."""
        if getattr(self, "_rt", None) is None:
            self._rt = Runtime.create("cpu", "off", 0)
        return self._rt

    def weight_step(self, net: SuperNet, alpha: torch.Tensor, x, y, opt, gen: torch.Generator,
                    uniform: bool = False, forward: nn.Module | None = None, global_count: int | None = None):
        """One weight step on one sampled path; ``forward`` is the module to run (the DDP wrapper of ``net``
        under torchrun), ``global_count`` the global batch's size (the loss is its mean however it is sliced).
        Returns the summed loss as a tensor (no synchronization)."""
        rt = self.rt
        with torch.no_grad():
            p = torch.isfinite(alpha).float() if uniform else self.probs(alpha)
            net.fix(torch.multinomial(p, 1, generator=gen)[:, 0].tolist())
        net.train()
        opt.zero_grad(set_to_none=True)
        with rt.autocast():
            loss = nn.functional.cross_entropy((forward or net)(rt.inputs(x)), y.to(rt.device),
                                               label_smoothing=self.train_cfg.label_smoothing, reduction="sum")
        (loss * (rt.world.size / (global_count or len(y)))).backward()
        opt.step()
        return loss.detach()

    def arch_step(self, net: SuperNet, alpha: torch.Tensor, x, y, arch_opt, ctx: SearchContext, target: float,
                  gen: torch.Generator) -> float:
        rt = self.rt
        p = self.probs(alpha)
        picks = []
        for layer, row in zip(net.mixed, p.detach()):
            k = min(2, int((row > 0).sum()))
            idx = torch.multinomial(row, k, replacement=False, generator=gen).tolist()
            sub = row[idx] / row[idx].sum()
            active = int(torch.multinomial(sub, 1, generator=gen))
            gates = torch.zeros(k, device=rt.device)
            gates[active] = 1.0
            gates.requires_grad_(True)
            layer.gated = (idx, gates)
            picks.append((idx, gates))
        net.train()  # batch statistics, as in the weight steps
        weights = [w for w in net.parameters() if w.requires_grad]
        for w in weights:  # the architecture step updates α only: no weight gradients are computed or stored
            w.requires_grad_(False)
        try:
            with rt.autocast():
                ce = nn.functional.cross_entropy(net(rt.inputs(x)), y.to(rt.device)).float()
            kind, a, b, lam = self.loss
            latency = ctx.model.expected_latency(p)
            loss = proxyless_loss(ce.cpu(), latency, target, kind=kind, alpha=a, beta=b, lam=lam)
            arch_opt.zero_grad(set_to_none=True)
            loss.backward()
        finally:
            for w in weights:
                w.requires_grad_(True)
        with torch.no_grad():
            grad = torch.nan_to_num(alpha.grad, nan=0.0, posinf=0.0, neginf=0.0) if alpha.grad is not None \
                else torch.zeros_like(alpha)
            old = alpha.detach().clone()
            for i, (idx, gates) in enumerate(picks):  # Σ_j g_j p_j (δ_ij − p_i) = p_i (g_i − Σ_j g_j p_j)
                pk = torch.softmax(old[i, idx], dim=0)
                g = gates.grad.cpu()
                grad[i, idx] += pk * (g - (g * pk).sum())
            alpha.grad = grad
        average_gradients([alpha], rt.device)  # each rank saw its slice of the batch: the mean, as one process
        arch_opt.step()
        with torch.no_grad():  # keep the paths that were not sampled at their probabilities
            for i, (idx, _) in enumerate(picks):
                shift = torch.logsumexp(alpha[i, idx], 0) - torch.logsumexp(old[i, idx], 0)
                alpha[i, idx] -= shift
        for layer in net.mixed:
            layer.gated = None
        return loss.item()

    @staticmethod
    def derive(alpha: torch.Tensor) -> np.ndarray:
        return alpha.detach().argmax(dim=1).numpy().astype(np.int64)

    def onto_budget(self, ctx: SearchContext, alpha: torch.Tensor, choices: np.ndarray) -> np.ndarray:
        """The derived choices made to use the budget: if over it, greedy swaps that lose the least
        log-probability per cost saved; then, if under its band, those that lose the least per cost gained."""
        logp = torch.log_softmax(alpha.detach(), dim=1).numpy()
        return ctx.feasibility.fill(self._under_budget(ctx, logp, choices), ctx.rng, logp=logp)

    def _under_budget(self, ctx: SearchContext, logp: np.ndarray, choices: np.ndarray) -> np.ndarray:
        row = np.array(choices, dtype=np.int64)
        lut = np.where(np.isfinite(logp), ctx.model.latency_matrix(), np.inf)
        mem = np.where(np.isfinite(logp), ctx.model.memory_matrix(), np.inf)
        for _ in range(int(num_choices(ctx.space).sum()) * 2):
            if ctx.feasibility.mask(row)[0]:
                return row
            costs = ctx.feasibility.costs(row)
            over_lat = ctx.budget.latency_ms is not None and costs["latency_ms"][0] > ctx.budget.latency_ms
            cost = lut if over_lat else mem
            best, pick = np.inf, None
            for i in range(len(row)):
                for j in np.flatnonzero(cost[i] < cost[i, row[i]]):
                    ratio = (logp[i, row[i]] - logp[i, j]) / (cost[i, row[i]] - cost[i, j])
                    if ratio < best:
                        best, pick = ratio, (i, j)
            if pick is None:
                break
            row[pick[0]] = pick[1]
        return ctx.feasibility.repair(row, ctx.rng)

    # -- the search ---------------------------------------------------------------------------
    def run(self, ctx: SearchContext) -> Arch:
        from hwnas.search.estimators import Estimator

        ctx.feasibility.check_possible()
        est: Estimator = ctx.estimator
        data = est.dataset
        cfg = self.train_cfg
        self._rt = rt = cfg.runtime()
        wset, aset = data.train, data.valid.evaluation()  # weights learn on train; α on valid, as ProxylessNAS does
        target = ctx.budget.latency_ms or float(ctx.feasibility.smallest()["latency_ms"]) * 2
        torch.manual_seed(ctx.seed)
        net, alpha = self.setup(ctx, data)
        net = rt.place(net)
        forward: nn.Module = net
        if rt.world.parallel:  # the weight steps: one path per step, the same on every rank (a shared seed)
            from torch.nn.parallel import DistributedDataParallel

            ids = [rt.device.index] if rt.device.type == "cuda" else None
            forward = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True)
        gen = torch.Generator().manual_seed(ctx.seed)
        steps = self.epochs * steps_per_epoch(len(wset), cfg, rt.world.size)
        opt, sched = make_optimizer(net.parameters(), cfg, steps)
        arch_opt = torch.optim.Adam([alpha], lr=self.arch_lr, betas=(0.0, 0.999), eps=1e-8)
        start = self._resume(ctx, net, alpha, opt, sched, arch_opt, gen)
        small = min_batch(rt.world.size)
        batches = ctx.estimator.progress("supernet", max(1, (self.epochs - start) * steps // max(1, self.epochs))) \
            if ctx.estimator.progress and rt.world.main else None

        def arch_batches(epoch: int, restart: int):
            return iter(loader(aset, cfg.batch_size, shuffle=True, seed=ctx.seed + 1, epoch=epoch * 1000 + restart,
                               workers=rt.workers, world=rt.world, min_batch=small))

        try:
            for epoch in range(start, self.epochs):
                search = epoch >= self.warmup
                restart = 0
                abatches = arch_batches(epoch, restart)
                wl = loader(wset, cfg.batch_size, shuffle=True, seed=ctx.seed, epoch=epoch, workers=rt.workers,
                            world=rt.world, min_batch=small)
                sizes = [len(b) for b in wl.sampler.global_batches()]
                for step, ((x, y), count) in enumerate(zip(wl, sizes)):
                    self.weight_step(net, alpha, x, y, opt, gen, uniform=not search, forward=forward,
                                     global_count=count)
                    sched.step()
                    if batches:
                        batches(1)
                    if search and step % self.arch_every == 0:
                        xa, ya = next(abatches, (None, None))
                        if xa is None:
                            restart += 1
                            abatches = arch_batches(epoch, restart)
                            xa, ya = next(abatches)
                        self.arch_step(net, alpha, xa, ya, arch_opt, ctx, target, gen)
                derived = self.onto_budget(ctx, alpha, self.derive(alpha))
                ctx.evaluate(derived[None], source=f"derived@epoch{epoch + 1}",
                             scorer=lambda arch: _path_accuracy(net, arch, data, rt))
                self._checkpoint(ctx, epoch + 1, net, alpha, opt, sched, arch_opt, gen)
        finally:
            cpu_contiguous(net)
        final = self.onto_budget(ctx, alpha, self.derive(alpha))
        self.final_probs = self.probs(alpha).detach().numpy()
        return Arch.of(ctx.space, final)

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint(self, ctx, epoch, net, alpha, opt, sched, arch_opt, gen) -> None:
        if ctx.run is None or not ctx.run.writer:
            return
        buf = io.BytesIO()
        torch.save({"epoch": epoch, "net": net.state_dict(), "alpha": alpha.detach(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "arch_opt": arch_opt.state_dict(), "gen": gen.get_state(),
                    "rng": ctx.rng.bit_generator.state}, buf)
        ctx.run.write_bytes(ctx.run.state_file("proxyless.pt"), buf.getvalue())

    def _resume(self, ctx, net, alpha, opt, sched, arch_opt, gen) -> int:
        path = ctx.run.state_file("proxyless.pt") if ctx.run is not None else None
        if path is None or not path.exists():
            return 0
        state = torch.load(path, weights_only=True)
        net.load_state_dict(state["net"])
        with torch.no_grad():
            alpha.copy_(state["alpha"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        arch_opt.load_state_dict(state["arch_opt"])
        gen.set_state(state["gen"])
        ctx.rng.bit_generator.state = state["rng"]
        ctx.restored()
        return int(state["epoch"])


def _path_accuracy(net: SuperNet, arch: Arch, data: Dataset, rt: Runtime) -> float:
    net.fix(arch.choices)
    net.recalibrate_bn(data.train, batches=4, runtime=rt)
    return evaluate(net, data.valid, rt)
