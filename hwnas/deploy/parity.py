"""Numerical parity of a deployed model with its PyTorch reference.

Elementwise ``|actual − reference| ≤ atol + rtol · |reference|`` (numpy's ``allclose``, Polygraphy's
comparison), with tolerances by precision: fp32 1e-5 like Polygraphy's default, fp16 1e-2, int8 (where
a quantized model is compared) only top-1 agreement. ``atol`` is relative too: the tolerance times the
largest reference magnitude (at least 1), because a logit near zero is the difference of large sums
whose float32 rounding scales with the output, not with that one value (trained logits of magnitude ~10
differ by ~1.5e-5 between ONNX Runtime and PyTorch after a 1280-wide dot product). On real data the
share of inputs whose top-1 class agrees is reported as well: what a deployment engineer cares about.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

TOLERANCES = {"fp32": (1e-5, 1e-5), "fp16": (1e-2, 1e-2), "int8": (np.inf, np.inf)}  # (rtol, atol)


@dataclass(frozen=True)
class Parity:
    max_abs_error: float
    max_rel_error: float
    rtol: float
    atol: float
    within_tolerance: float  # share of elements within atol + rtol·|ref|
    top1_agreement: float  # share of inputs whose argmax agrees
    inputs: int
    passed: bool

    def describe(self) -> str:
        return (f"max |Δ| {self.max_abs_error:.3g}, max rel {self.max_rel_error:.3g} "
                f"(rtol {self.rtol:g}, atol {self.atol:g}: {self.within_tolerance:.2%} of elements within), "
                f"top-1 agreement {self.top1_agreement:.2%} over {self.inputs} inputs")

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def random_inputs(input_shape: tuple[int, ...], batches: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(input_shape, dtype=np.float32) for _ in range(batches)]


def compare(reference: np.ndarray, actual: np.ndarray, precision: str = "fp32", *,
            need_top1: float = 1.0) -> Parity:
    """``reference`` and ``actual`` are (..., classes) logits of the same inputs."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(actual, dtype=np.float64)
    if ref.shape != got.shape:
        return Parity(np.inf, np.inf, *TOLERANCES[precision], 0.0, 0.0, int(np.prod(ref.shape[:-1])), False)
    rtol, atol = TOLERANCES[precision]
    atol = atol * max(1.0, float(np.abs(ref).max(initial=0.0)))
    diff = np.abs(got - ref)
    ok = diff <= atol + rtol * np.abs(ref)
    rel = diff / np.maximum(np.abs(ref), 1e-12)
    flat_ref, flat_got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    top1 = float(np.mean(flat_ref.argmax(-1) == flat_got.argmax(-1)))
    return Parity(float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), rtol, atol, float(ok.mean()), top1,
                  len(flat_ref), bool(ok.all()) and top1 >= need_top1)
