"""The hardware-aware objectives of the papers, on latency and memory from the cost model.

- ProxylessNAS (Cai et al., 2019): ``loss = CE · α · (log E[LAT] / log T)^β`` (α 0.2, β 0.3 in their code), or
  the additive form ``CE + λ · E[LAT]``; E[LAT] is the differentiable expected latency
  (:meth:`hwnas.cost.model.CostModel.expected_latency`). Both are taken here on the ratio E[LAT]/T, so that they
  do not depend on the unit: ``CE · α · (E[LAT]/T)^β`` and ``CE + λ · E[LAT]/T``. The paper's logarithms are of
  milliseconds: log E/log T pulls differently at 0.5 ms and at 80 ms for the same β (and is undefined below 1 ms),
  while the pull of (E/T)^β, ∂ log loss / ∂ log E[LAT] = β, is the same on every device.
- MnasNet (Tan et al., 2019): ``reward = ACC · (LAT / T)^w`` with w = α where LAT ≤ T and β otherwise;
  soft constraint α = β = −0.07, hard constraint α = 0, β = −1.
- MemNet / MemNAS (Liu et al., 2019): a ranking score that weighs accuracy against total memory (weights +
  feature maps), each relative to a reference network, with a hard upper bound: a candidate over the bound
  scores −∞ and is never trained.

Latency in ms, memory in bytes; the functions take floats, numpy arrays or torch tensors alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnas.core.errors import ConfigError

MNAS_SOFT = (-0.07, -0.07)
MNAS_HARD = (0.0, -1.0)


def _check_target(value: float, what: str) -> None:
    if not value > 0:
        raise ConfigError(f"the {what} target must be positive, got {value}.", f"give a {what} budget above 0")


def proxyless_loss(ce, expected_latency, target_ms: float, *, kind: str = "mul", alpha: float = 0.2,
                   beta: float = 0.3, lam: float = 0.1):
    """ProxylessNAS's latency-aware loss, unit-free: ``mul`` = CE·α·(E[LAT]/T)^β, ``add`` = CE + λ·E[LAT]/T.

    One β (or λ) means the same on every device and at every budget."""
    _check_target(target_ms, "latency")
    if kind == "mul":
        return ce * alpha * (expected_latency / target_ms) ** beta
    if kind == "add":
        return ce + lam * expected_latency / target_ms
    raise ConfigError(f"unknown ProxylessNAS loss '{kind}'.", "use mul or add")


def mnas_reward(accuracy, latency_ms, target_ms: float, *, alpha: float = MNAS_SOFT[0], beta: float = MNAS_SOFT[1]):
    """MnasNet's reward ACC · (LAT/T)^w, w = α within the target and β beyond it (element-wise on arrays)."""
    _check_target(target_ms, "latency")
    ratio = np.asarray(latency_ms, dtype=float) / target_ms
    w = np.where(ratio <= 1.0, alpha, beta)
    out = np.asarray(accuracy, dtype=float) * ratio ** w
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class MemNetScore:
    """score = λ·ACC/ACC_ref + (1−λ)·MEM_ref/MEM, and −∞ above the memory bound (bytes).

    ``reference_*`` come from the seed network, so the seed scores exactly 1 and a move that saves memory at
    equal accuracy scores above it."""

    bound_bytes: float
    reference_accuracy: float
    reference_memory_bytes: float
    lam: float = 0.5

    def __post_init__(self) -> None:
        _check_target(self.bound_bytes, "memory")
        if not 0.0 <= self.lam <= 1.0:
            raise ConfigError(f"MemNet's λ {self.lam} is out of range.", "use 0 ≤ λ ≤ 1")
        if self.reference_accuracy <= 0 or self.reference_memory_bytes <= 0:
            raise ConfigError("MemNet's reference accuracy and memory must be positive.",
                              "score the seed network first")

    def feasible(self, memory_bytes) -> np.ndarray | bool:
        return np.asarray(memory_bytes) <= self.bound_bytes

    def __call__(self, accuracy, memory_bytes):
        acc = np.asarray(accuracy, dtype=float)
        mem = np.asarray(memory_bytes, dtype=float)
        score = self.lam * acc / self.reference_accuracy + (1.0 - self.lam) * self.reference_memory_bytes / mem
        out = np.where(mem <= self.bound_bytes, score, -np.inf)
        return float(out) if out.ndim == 0 else out
