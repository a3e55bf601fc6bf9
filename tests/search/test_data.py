import os
import pickle

import numpy as np
import pytest
import torch

from hwnas.core.errors import ConfigError
from hwnas.search.data import load


def test_digits_is_built_in_resized_split_and_deterministic():
    a = load("digits", 32, seed=3)
    b = load("digits", 32, seed=3)
    c = load("digits", 32, seed=4)
    assert a.classes == 10 and a.train.x.shape[1:] == (3, 32, 32) and a.train.x.dtype == torch.float32
    assert len(a.train) + len(a.valid) == 1797 and len(a.valid) == round(1797 * 0.2)
    assert torch.equal(a.valid.y, b.valid.y) and not torch.equal(a.valid.y, c.valid.y)
    assert abs(float(a.train.x.mean())) < 0.05  # normalized on the training split
    small = load("digits", 16, seed=0, limit=100)
    assert len(small.train) + len(small.valid) == 100 and small.train.x.shape[-1] == 16


def _write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    path.write_bytes(pickle.dumps(data))


def test_cifar10_batches_load_from_a_folder(tmp_path):
    _write_batch(tmp_path / "data_batch_1", 40, 0)
    _write_batch(tmp_path / "test_batch", 10, 1)
    ds = load(f"cifar10:{tmp_path}", 32, seed=0)
    assert len(ds.train) + len(ds.valid) == 50 and ds.train.x.shape[1:] == (3, 32, 32)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar10_loader_refuses_a_pickle_that_would_run_code(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(ConfigError, match="not a CIFAR-10 python batch"):
        load(f"cifar10:{tmp_path}", 32)
    with pytest.raises(ConfigError, match="does not exist"):
        load(f"cifar10:{tmp_path / 'missing'}", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no CIFAR-10 batches"):
        load(f"cifar10:{tmp_path / 'empty'}", 32)


def test_imagefolder_reads_one_folder_per_class(tmp_path):
    from PIL import Image

    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 12), color).save(tmp_path / cls / f"{i}.png")
    ds = load(f"imagefolder:{tmp_path}", 16, valid_fraction=0.34)
    assert ds.classes == 2 and len(ds.train) + len(ds.valid) == 6 and ds.train.x.shape[1:] == (3, 16, 16)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="cannot read image"):
        load(f"imagefolder:{tmp_path}", 16)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ConfigError, match="digits"):
        load("mnist", 32)


@pytest.mark.parametrize("spec, says, fix", [
    ("cifar10:", "names no folder", "cifar10:DIR"),
    ("imagefolder:", "names no folder", "imagefolder:DIR"),
    ("imagefolder:/nonexistent/hwnas", "does not exist", "one sub-folder of images per class"),
    ("fashion-mnist:{tmp}", "unknown dataset", "imagefolder:DIR"),
    ("bogus:x", "unknown dataset", "digits"),
    ("digits:{tmp}", "take no folder", "--data digits"),
    ("", "not a dataset", "digits"),
])
def test_a_bad_data_spec_is_one_error_with_the_fix(tmp_path, spec, says, fix):
    from hwnas.search.data import check_spec

    spec = spec.replace("{tmp}", str(tmp_path))
    for call in (lambda: check_spec(spec), lambda: load(spec, 32)):
        with pytest.raises(ConfigError, match=says) as exc:
            call()
        assert fix in exc.value.hint


def test_a_file_named_as_a_data_folder_and_a_truncated_batch_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        load(f"imagefolder:{tmp_path / 'file'}", 32)
    _write_batch(tmp_path / "data_batch_1", 20, 0)
    raw = (tmp_path / "data_batch_1").read_bytes()
    (tmp_path / "data_batch_1").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ConfigError, match="not a CIFAR-10 python batch") as exc:
        load(f"cifar10:{tmp_path}", 32)
    assert "cifar-10-batches-py" in exc.value.hint


def test_a_limit_that_leaves_too_few_training_images_is_refused():
    with pytest.raises(ConfigError, match="training images") as exc:
        load("digits", 8, limit=3)
    assert "--limit" in exc.value.hint
    assert len(load("digits", 8, limit=10).train) >= 4
