import numpy as np
import pytest
import torch

from hwnas.core.errors import ConfigError
from hwnas.search.objectives import MNAS_HARD, MemNetScore, mnas_reward, proxyless_loss


def test_mnas_soft_reward_penalizes_both_sides_by_the_same_power():
    assert mnas_reward(0.8, 10.0, 10.0) == pytest.approx(0.8)
    assert mnas_reward(0.8, 20.0, 10.0) == pytest.approx(0.8 * 2 ** -0.07)
    assert mnas_reward(0.8, 5.0, 10.0) == pytest.approx(0.8 * 0.5 ** -0.07)  # faster is rewarded a little
    many = mnas_reward(np.array([0.8, 0.8]), np.array([5.0, 20.0]), 10.0)
    assert many.shape == (2,) and many[0] > many[1]


def test_mnas_hard_reward_is_accuracy_within_and_inverse_beyond():
    a, b = MNAS_HARD
    assert mnas_reward(0.7, 9.0, 10.0, alpha=a, beta=b) == pytest.approx(0.7)
    assert mnas_reward(0.7, 20.0, 10.0, alpha=a, beta=b) == pytest.approx(0.35)


def test_proxyless_losses():
    ce = torch.tensor(2.0)
    at_target = proxyless_loss(ce, torch.tensor(8.0), 8.0)
    assert float(at_target) == pytest.approx(2.0 * 0.2)
    slower = proxyless_loss(ce, torch.tensor(16.0), 8.0)
    assert float(slower) == pytest.approx(2.0 * 0.2 * 2.0 ** 0.3)
    add = proxyless_loss(ce, torch.tensor(4.0), 8.0, kind="add", lam=0.5)
    assert float(add) == pytest.approx(2.0 + 0.5 * 0.5)
    lat = torch.tensor(6.0, requires_grad=True)
    proxyless_loss(ce, lat, 8.0).backward()
    assert lat.grad > 0  # the loss pushes latency down
    with pytest.raises(ConfigError, match="positive"):
        proxyless_loss(ce, torch.tensor(0.5), 0.0)


@pytest.mark.parametrize("kind", ["mul", "add"])
def test_proxyless_loss_is_unit_free(kind):
    """The same net and budget in ms or in µs: the same loss and the same pull on α (one β for every device)."""
    ce = torch.tensor(1.3)
    grads = []
    for scale in (1.0, 1000.0):
        lat = torch.tensor(0.6 * scale, requires_grad=True)
        loss = proxyless_loss(ce, lat, 0.8 * scale, kind=kind)
        (g,) = torch.autograd.grad(loss, lat)
        grads.append((loss.item(), g.item() * scale))  # ∂loss/∂(E/T): the pull on the ratio
    assert grads[0] == pytest.approx(grads[1])


def test_memnet_score_ranks_memory_at_equal_accuracy_and_bounds_hard():
    s = MemNetScore(bound_bytes=10e6, reference_accuracy=0.9, reference_memory_bytes=8e6)
    assert s(0.9, 8e6) == pytest.approx(1.0)
    assert s(0.9, 6e6) > s(0.9, 8e6) > s(0.85, 8e6)
    assert s(0.99, 11e6) == -np.inf
    assert list(s.feasible(np.array([9e6, 11e6]))) == [True, False]
    with pytest.raises(ConfigError):
        MemNetScore(bound_bytes=0, reference_accuracy=0.9, reference_memory_bytes=1)
