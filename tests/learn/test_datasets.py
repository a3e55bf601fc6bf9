import os
import pickle

import numpy as np
import pytest
import torch

from hwnas.core.errors import ConfigError
from hwnas.learn.data import load
from hwnas.learn.formats import read_idx


def test_digits_is_built_in_resized_split_three_ways_and_deterministic():
    a = load("digits", 32, seed=3)
    b = load("digits", 32, seed=3)
    c = load("digits", 32, seed=4)
    x, y = a.train.evaluation().head(16)
    assert a.classes == 10 and x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(a.train) + len(a.valid) + len(a.test) == 1797 and len(a.test) == round(1797 * 0.2)
    pools = [set(s.indices.tolist()) for s in (a.train, a.valid, a.test)]  # the splits share no image
    assert not (pools[0] & pools[1] or pools[0] & pools[2] or pools[1] & pools[2])
    assert np.array_equal(a.valid.indices, b.valid.indices) and not np.array_equal(a.valid.indices, c.valid.indices)
    assert abs(float(a.train.evaluation().head(400)[0].mean())) < 0.1  # normalized by a training sample
    assert a.augment == "crop"  # a mirrored digit is another digit
    small = load("digits", 16, seed=0, limit=100)
    assert len(small.train) + len(small.valid) == 100 and len(small.test) == len(a.test)  # test stays whole
    assert small.train.head(1)[0].shape[-1] == 16


def _write_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    path.write_bytes(pickle.dumps(data))


def test_cifar10_batches_load_from_a_folder(tmp_path):
    _write_batch(tmp_path / "data_batch_1", 40, 0)
    _write_batch(tmp_path / "test_batch", 10, 1)
    ds = load(f"cifar10:{tmp_path}", 32, seed=0)
    assert len(ds.train) + len(ds.valid) == 40 and len(ds.test) == 10  # test_batch is the test split, never pooled
    assert ds.test.head(10)[0].shape == (10, 3, 32, 32) and ds.test_source == "the dataset's own test set"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar10_loader_refuses_a_pickle_that_would_run_code(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": [0]}))
    with pytest.raises(ConfigError, match="not a cifar10 python batch"):
        load(f"cifar10:{tmp_path}", 32)
    with pytest.raises(ConfigError, match="does not exist"):
        load(f"cifar10:{tmp_path / 'missing'}", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no cifar10 training batches"):
        load(f"cifar10:{tmp_path / 'empty'}", 32)


def test_imagefolder_reads_one_folder_per_class(tmp_path):
    from PIL import Image

    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 12), color).save(tmp_path / cls / f"{i}.png")
    ds = load(f"imagefolder:{tmp_path}", 16, valid_fraction=0.34)
    assert ds.classes == 2 and len(ds.train) + len(ds.valid) + len(ds.test) == 10
    assert ds.train.head(2)[0].shape == (2, 3, 16, 16)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="cannot read image"):  # at load (a statistics sample) or in a batch
        ds = load(f"imagefolder:{tmp_path}", 16)
        for split in (ds.train, ds.valid, ds.test):
            split[np.arange(len(split))]


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ConfigError, match="digits"):
        load("svhn", 32)


@pytest.mark.parametrize("spec, says, fix", [
    ("cifar10:", "names no folder", "cifar10:DIR"),
    ("imagefolder:", "names no folder", "imagefolder:DIR"),
    ("imagefolder:/nonexistent/hwnas", "does not exist", "one sub-folder of images per class"),
    ("fashion-mnist:{tmp}", "unknown dataset", "mnist:DIR"),
    ("mnist:", "names no folder", "IDX files"),
    ("mnist:{tmp}", "no IDX training files", "dataset-fashion-mnist"),
    ("cifar100:{tmp}", "no cifar100 training batches", "cifar100:DIR"),
    ("bogus:x", "unknown dataset", "digits"),
    ("digits:{tmp}", "take no folder", "--data digits"),
    ("", "not a dataset", "digits"),
])
def test_a_bad_data_spec_is_one_error_with_the_fix(tmp_path, spec, says, fix):
    from hwnas.learn.data import check_spec

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
    with pytest.raises(ConfigError, match="not a cifar10 python batch") as exc:
        load(f"cifar10:{tmp_path}", 32)
    assert "cifar-10-batches-py" in exc.value.hint


def test_a_limit_that_leaves_too_few_training_images_is_refused():
    with pytest.raises(ConfigError, match="training images") as exc:
        load("digits", 8, limit=3)
    assert "--limit" in exc.value.hint
    assert len(load("digits", 8, limit=10).train) >= 4


def write_idx(path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (gzipped when the name ends in .gz), as MNIST ships them."""
    import gzip

    raw = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_mnist(folder, n_train: int, n_test: int, gz: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    ext = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n))
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_gzipped_or_not_load_with_t10k_as_the_test_split(tmp_path, gz):
    folder = write_mnist(tmp_path / "fmnist", 50, 12, gz)
    ds = load(f"mnist:{folder}", 32, seed=0)
    assert (len(ds.train) + len(ds.valid), len(ds.test), ds.classes) == (50, 12, 10)
    x, y = ds.test.head(12)
    assert x.shape == (12, 3, 32, 32) and torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # gray
    labels = read_idx(next(folder.glob("t10k-labels*")))
    assert np.array_equal(y.numpy(), labels)
    images = read_idx(next(folder.glob("train-images*")))
    assert isinstance(images, np.memmap) == (not gz)  # an uncompressed file is mapped, not read
    assert ds.describe()["splits"] == {"train": len(ds.train), "valid": len(ds.valid), "test": 12}


def test_a_truncated_or_foreign_idx_file_is_an_error_with_the_fix(tmp_path):
    folder = write_mnist(tmp_path / "m", 20, 5, gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="not a readable IDX file") as exc:
        load(f"mnist:{folder}", 32)
    assert "train-images-idx3-ubyte" in exc.value.hint
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(ConfigError, match="not a readable IDX file"):
        load(f"mnist:{folder}", 32)
    (folder / "train-images-idx3-ubyte").unlink()
    with pytest.raises(ConfigError, match="but no train-images-idx3-ubyte"):
        load(f"mnist:{folder}", 32)


def test_cifar100_reads_fine_labels_and_its_test_file(tmp_path):
    rng = np.random.default_rng(0)
    for name, n in (("train", 30), ("test", 8)):
        (tmp_path / name).write_bytes(pickle.dumps({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                                    b"fine_labels": list(rng.integers(0, 100, n)),
                                                    b"coarse_labels": [0] * n}))
    ds = load(f"cifar100:{tmp_path}", 32)
    assert ds.classes == 100 and len(ds.test) == 8 and len(ds.train) + len(ds.valid) == 30


def _image_tree(root, splits, per_class=3, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(d / f"{i}.png")


@pytest.mark.parametrize("splits, sizes", [
    (("train", "val", "test"), {"train": 8, "valid": 4, "test": 6}),  # all three as given
    (("train", "test"), {"test": 6}),  # valid carved from train/
    (("train", "val"), {"test": 6}),  # val/ is the held-out (test) split, as ImageNet's is reported
])
def test_imagefolder_train_val_test_subfolders_are_used_as_given(tmp_path, splits, sizes):
    _image_tree(tmp_path, splits, per_class=4 if "val" in splits and "test" in splits else 3)
    if splits == ("train", "val", "test"):
        for sub in ("val", "test"):  # fewer images there, so each split is told apart by its size
            for cls in ("cat", "dog"):
                for f in sorted((tmp_path / sub / cls).glob("*.png"))[{"val": 2, "test": 3}[sub]:]:
                    f.unlink()
    ds = load(f"imagefolder:{tmp_path}", 32, valid_fraction=0.34)
    got = ds.describe()["splits"]
    assert {k: got[k] for k in sizes} == sizes and ds.test_source == "the dataset's own test set"


def test_training_augmentation_is_reproducible_per_image_and_evaluation_is_untouched(tmp_path):
    ds = load("mnist:" + str(write_mnist(tmp_path / "m", 40, 4, gz=True)), 32, seed=0)
    assert ds.augment == "flip-crop"
    items = np.arange(8)
    a, _ = ds.train[items]
    b, _ = ds.train[items]
    assert torch.equal(a, b)  # the same draws for the same (seed, epoch, image)
    one, _ = ds.train[items[3:4]]
    assert torch.equal(one[0], a[3])  # an image's draws do not depend on its batch (or on a worker, or a rank)
    ds.train.set_epoch(1)
    c, _ = ds.train[items]
    assert not torch.equal(a, c)  # another epoch, other crops
    e1, _ = ds.train.evaluation()[items]
    ds.train.set_epoch(0)
    e0, _ = ds.train.evaluation()[items]
    assert torch.equal(e0, e1) and not torch.equal(e0, a)  # evaluation: no augmentation, whatever the epoch


def test_random_resized_crop_above_64_px_from_files(tmp_path):
    _image_tree(tmp_path, ("train", "test"), per_class=3, size=(300, 200))
    ds = load(f"imagefolder:{tmp_path}", 96, augment="flip-crop")
    x, _ = ds.train[np.arange(len(ds.train))]
    ev, _ = ds.train.evaluation()[np.arange(len(ds.train))]
    assert x.shape == ev.shape == (len(ds.train), 3, 96, 96) and not torch.allclose(x, ev)
    none = load(f"imagefolder:{tmp_path}", 96, augment="none")
    assert torch.equal(none.train[np.arange(len(none.train))][0], ev)
    with pytest.raises(ConfigError, match="unknown augmentation"):
        load(f"imagefolder:{tmp_path}", 96, augment="mixup")


def test_loader_workers_give_the_batches_of_the_main_process(tmp_path):
    from hwnas.learn.loader import loader

    ds = load("mnist:" + str(write_mnist(tmp_path / "m", 60, 4, gz=False)), 32, seed=0)
    main = [(x, y) for x, y in loader(ds.train, 16, shuffle=True, seed=1, epoch=2)]
    workers = [(x, y) for x, y in loader(ds.train, 16, shuffle=True, seed=1, epoch=2, workers=2)]
    assert len(main) == len(workers) == -(-len(ds.train) // 16)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, workers))
