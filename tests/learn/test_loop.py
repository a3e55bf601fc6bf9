import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch

from hwnas.core.errors import ConfigError
from hwnas.learn.data import load
from hwnas.learn.loop import TrainConfig, build_for, evaluate, train
from hwnas.learn.runtime import Runtime
from hwnas.spaces import get_space
from hwnas.spaces.arch import Arch

SPACE = get_space("proxyless", 32)
ARCH = Arch.of(SPACE, SPACE.reference_choices())


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.fixture(scope="module")
def digits():
    return load("digits", 32, seed=0, limit=160)


def test_training_is_deterministic_on_the_cpu_and_records_images_per_second(digits):
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", seed=3)
    a, b = build_for(ARCH, digits.classes, 3), build_for(ARCH, digits.classes, 3)
    ra, rb = train(a, digits, cfg), train(b, digits, cfg)
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    row = ra.history[0]
    assert row["images_per_s"] > 0 and row["seconds"] > 0 and row["valid_accuracy"] == rb.history[0]["valid_accuracy"]
    assert next(a.parameters()).device.type == "cpu" and not a.training  # back on the CPU, in eval mode


def test_micro_batches_give_the_weights_of_their_slices_accumulated(digits):
    """A global batch split in micro-batches follows the same gradient (the global mean) as a second process
    would give it; BatchNorm then normalizes each slice. Two halves of 16 vs one batch of 32 must differ only
    by BatchNorm, and halves of 16 twice over must agree exactly."""
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", micro_batch=16)
    a, b = build_for(ARCH, digits.classes, 0), build_for(ARCH, digits.classes, 0)
    train(a, digits, cfg)
    train(b, digits, cfg)
    c = build_for(ARCH, digits.classes, 0)
    train(c, digits, replace(cfg, micro_batch=None))
    pa, pb, pc = _params(a), _params(b), _params(c)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.allclose(pa[k], pc[k]) for k in pa)


def test_progress_hears_every_batch_of_every_epoch(digits):
    seen = []

    def task(label, total):
        seen.append((label, total))
        return lambda n=1: seen.append(n)

    train(build_for(ARCH, digits.classes, 0), digits, TrainConfig(epochs=2, batch_size=64, device="cpu"),
          progress=task, label="retrain")
    steps = -(-len(digits.train) // 64)
    assert seen[0] == ("retrain", 2 * steps) and sum(seen[1:]) == 2 * steps


def test_a_training_device_that_is_not_there_is_an_error_with_the_fix():
    with pytest.raises(ConfigError, match="is not a training device") as exc:
        TrainConfig(device="gpu")
    assert "cuda" in exc.value.hint
    with pytest.raises(ConfigError, match="fp16 trains only on CUDA"):
        Runtime.create("cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA GPU") as exc:
            Runtime.create("cuda")
        assert "--train-device cpu" in exc.value.hint
    assert Runtime.create("auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bf16_autocast_trains_on_the_cpu(digits):
    net = build_for(ARCH, digits.classes, 0)
    res = train(net, digits, TrainConfig(epochs=1, batch_size=64, device="cpu", amp="bf16"))
    assert 0.0 <= res.valid_accuracy <= 1.0 and next(net.parameters()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this host)")
def test_cuda_training_matches_the_cpu_closely(digits):
    cfg = TrainConfig(epochs=1, batch_size=32, amp="off")
    a, b = build_for(ARCH, digits.classes, 0), build_for(ARCH, digits.classes, 0)
    train(a, digits, replace(cfg, device="cpu"))
    res = train(b, digits, replace(cfg, device="cuda"))
    assert next(b.parameters()).device.type == "cpu"
    assert abs(evaluate(a, digits.valid) - evaluate(b, digits.valid)) < 0.1 and res.history[0]["images_per_s"] > 0


DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from hwnas.learn.data import load
    from hwnas.learn.distributed import world
    from hwnas.learn.loop import TrainConfig, build_for, evaluate, train
    from hwnas.spaces import get_space
    from hwnas.spaces.arch import Arch

    torch.set_num_threads(1)
    space = get_space("proxyless", 32)
    arch = Arch.of(space, space.reference_choices())
    place = world()
    data = load("digits", 32, seed=0, limit=160)
    micro = int(sys.argv[2]) or None
    net = build_for(arch, data.classes, 0)
    res = train(net, data, TrainConfig(epochs=2, batch_size=32, device="cpu", micro_batch=micro))
    if place.main:
        torch.save({k: v.detach() for k, v in net.named_parameters()}, sys.argv[1])
        print(json.dumps({"world": place.size, "valid": res.valid_accuracy, "loss": res.history[-1]["loss"]}))
""")


@pytest.mark.slow
def test_ddp_with_gloo_on_two_processes_gives_the_weights_of_one_process(tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 32: each rank trains on its 16 images of each batch. One
    process with the same global batch in micro-batches of 16 (the same BatchNorm slices) must end with the same
    weights, within float tolerance (the all-reduce sums in another order)."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29517", str(script), str(tmp_path / "two.pt"), "0"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.pt"), "16"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    info_two = json.loads(two.stdout.strip().splitlines()[-1])
    info_one = json.loads(one.stdout.strip().splitlines()[-1])
    assert info_two["world"] == 2 and info_one["world"] == 1
    a, b = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert info_two["loss"] == pytest.approx(info_one["loss"], rel=1e-4)
    initial = build_for(ARCH, 10, 0)
    assert any(not torch.allclose(a[k], v) for k, v in initial.named_parameters())  # it trained
