"""Static memory of one block, from its torch module: weights after BN folding and activation sizes."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.devices.registry import ELEMENT_BYTES


def folded_weight_count(module: nn.Module) -> int:
    """Parameters a deployed model keeps: conv/linear weights and biases; each BN folds into a bias."""
    count = 0
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            count += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        elif isinstance(m, nn.BatchNorm2d):
            count += m.num_features  # the folded conv bias (the scale folds into the weights)
    return count


def block_footprint(module: nn.Module, input_shape: tuple[int, ...], precision: str = "fp32") -> dict[str, int]:
    """Weight bytes, input/output bytes, and the largest intermediate tensor any leaf module produces."""
    size = ELEMENT_BYTES[precision]
    largest = 0

    def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel())

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    n_in = int(torch.Size(input_shape).numel())
    return {"weight_bytes": folded_weight_count(module) * size, "input_bytes": n_in * size,
            "output_bytes": out.numel() * size, "largest_intermediate_bytes": max(largest, out.numel()) * size}
