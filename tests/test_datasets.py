"""Tests for the offline datasets: fixed splits, standardisation, and the on-disk file formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import datasets as sk_datasets

from ganno_env.datasets import (
    DATASET_NAMES,
    FASHION_MNIST_DEFAULT_DIR,
    DatasetFileError,
    DatasetNotFoundError,
    DataSplits,
    clear_cache,
    dataset_available,
    load_dataset,
    read_idx,
    write_idx,
)

# name -> (total samples, input shape, kind, num_outputs)
GENERATED = {
    "digits": (1797, (1, 8, 8), "classification", 10),
    "breast_cancer": (569, (30,), "classification", 2),
    "wine": (178, (13,), "classification", 3),
    "moons": (1500, (2,), "classification", 2),
    "blobs": (1500, (8,), "classification", 4),
    "regression": (1500, (16,), "regression", 1),
}

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def splits_tensors(splits: DataSplits) -> list[torch.Tensor]:
    return [
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        splits.x_test,
        splits.y_test,
    ]


def raw_features(name: str) -> np.ndarray:
    """The unsplit features as scikit-learn gives them, to check the splits cover them once."""
    if name == "digits":
        return sk_datasets.load_digits().data
    if name == "breast_cancer":
        return sk_datasets.load_breast_cancer().data
    if name == "wine":
        return sk_datasets.load_wine().data
    if name == "moons":
        return sk_datasets.make_moons(n_samples=1500, noise=0.25, random_state=0)[0]
    if name == "blobs":
        return sk_datasets.make_blobs(
            n_samples=1500, centers=4, n_features=8, cluster_std=2.0, random_state=0
        )[0]
    return sk_datasets.make_regression(
        n_samples=1500, n_features=16, n_informative=8, noise=10.0, random_state=0
    )[0]


# --- bundled and generated sets -------------------------------------------------------------


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_set_shapes_and_kinds(name: str) -> None:
    total, input_shape, kind, num_outputs = GENERATED[name]
    splits = load_dataset(name)
    assert splits.name == name
    assert splits.kind == kind
    assert splits.num_outputs == num_outputs
    assert splits.input_shape == input_shape
    sizes = [len(splits.x_train), len(splits.x_val), len(splits.x_test)]
    assert sum(sizes) == total
    assert sizes[1] == sizes[2] == round(0.2 * total)
    for x, y in [
        (splits.x_train, splits.y_train),
        (splits.x_val, splits.y_val),
        (splits.x_test, splits.y_test),
    ]:
        assert x.dtype == torch.float32
        assert x.shape[1:] == input_shape
        assert len(y) == len(x)
        if kind == "classification":
            assert y.dtype == torch.int64
            assert y.shape == (len(x),)
            assert 0 <= int(y.min()) and int(y.max()) < num_outputs
        else:
            assert y.dtype == torch.float32
            assert y.shape == (len(x), num_outputs)


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_splits_are_disjoint_and_cover_the_data(name: str) -> None:
    splits = load_dataset(name)
    rows = torch.cat([splits.x_train, splits.x_val, splits.x_test]).flatten(1).numpy()
    # Standardisation is one affine map for all splits, so distinct raw rows stay distinct:
    # an overlap between splits would show up as fewer unique rows than the raw data has.
    raw = raw_features(name)
    assert len(rows) == len(raw)
    assert len(np.unique(rows, axis=0)) == len(np.unique(raw, axis=0))


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_train_split_is_standardised(name: str) -> None:
    splits = load_dataset(name)
    x = splits.x_train.double()
    if name == "digits":  # image set: one global mean/std
        assert abs(float(x.mean())) < 1e-5
        assert float(x.std(correction=0)) == pytest.approx(1.0, abs=1e-4)
    else:  # tabular: every feature on its own
        torch.testing.assert_close(
            x.mean(0), torch.zeros(x.shape[1], dtype=torch.float64), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            x.std(0, correction=0), torch.ones(x.shape[1], dtype=torch.float64), atol=1e-4, rtol=0
        )
    # Held-out splits use the train statistics, so they are only roughly standardised.
    assert abs(float(splits.x_test.mean())) < 0.5
    if splits.kind == "regression":
        y = splits.y_train.double()
        assert abs(float(y.mean())) < 1e-5
        assert float(y.std(correction=0)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "name", [n for n, spec in GENERATED.items() if spec[2] == "classification"]
)
def test_classification_splits_are_stratified(name: str) -> None:
    splits = load_dataset(name)
    k = splits.num_outputs
    overall = torch.bincount(
        torch.cat([splits.y_train, splits.y_val, splits.y_test]), minlength=k
    ).double()
    for y in (splits.y_train, splits.y_val, splits.y_test):
        counts = torch.bincount(y, minlength=k).double()
        expected = overall * len(y) / overall.sum()
        assert torch.all((counts - expected).abs() <= 2), (counts, expected)


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_sets_are_cached_and_deterministic(name: str) -> None:
    first = load_dataset(name)
    assert load_dataset(name) is first
    clear_cache()
    second = load_dataset(name)
    assert second is not first
    for a, b in zip(splits_tensors(first), splits_tensors(second), strict=True):
        assert torch.equal(a, b)


def test_splits_to_device_copies_everything() -> None:
    splits = load_dataset("wine")
    moved = splits.to("cpu")
    assert moved.name == "wine" and moved.num_outputs == 3 and moved.kind == "classification"
    for a, b in zip(splits_tensors(splits), splits_tensors(moved), strict=True):
        assert b.device.type == "cpu"
        assert torch.equal(a, b)
    if torch.cuda.is_available():
        assert all(t.is_cuda for t in splits_tensors(splits.to("cuda")))


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError) as excinfo:
        load_dataset("imagenet")
    message = str(excinfo.value)
    assert "imagenet" in message
    for name in DATASET_NAMES:
        assert name in message
    with pytest.raises(ValueError):
        dataset_available("imagenet")


def test_generated_sets_are_always_available(tmp_path: Path) -> None:
    for name in GENERATED:
        assert dataset_available(name)
        assert dataset_available(name, data_dir=tmp_path / "nowhere")


# --- IDX format -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5)])
def test_idx_round_trip(tmp_path: Path, dtype: str, suffix: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        array = rng.normal(size=shape).astype(dtype)
    path = tmp_path / f"data{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    assert np.array_equal(back, array)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == (suffix == ".gz")


def test_write_idx_uses_the_standard_header(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "images", images)
    raw = (tmp_path / "images").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 3])  # magic 2051, as in MNIST image files
    assert struct.unpack(">3I", raw[4:16]) == (2, 3, 4)
    assert raw[16:] == images.tobytes()


def test_read_idx_reads_big_endian_files_written_elsewhere(tmp_path: Path) -> None:
    values = [1, -2, 300, -32768]
    payload = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 4) + struct.pack(">4h", *values)
    with gzip.open(tmp_path / "shorts.gz", "wb") as f:
        f.write(payload)
    array = read_idx(tmp_path / "shorts.gz")
    assert array.dtype == np.int16
    assert array.tolist() == values


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="data bytes"):
        read_idx(tmp_path / "short")


def test_write_idx_rejects_unsupported_dtypes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


# --- MNIST-style sets from tiny IDX files ---------------------------------------------------


def mnist_label(index: int) -> int:
    return (3 * index + 1) % 10


def write_tiny_mnist(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> None:
    """Image i is black with one white pixel at flat position i, so it can be recognised later."""
    suffix = ".gz" if gz else ""

    def images(n: int) -> np.ndarray:
        out = np.zeros((n, 28 * 28), dtype=np.uint8)
        out[np.arange(n), np.arange(n)] = 255
        return out.reshape(n, 28, 28)

    def labels(n: int) -> np.ndarray:
        return np.array([mnist_label(i) for i in range(n)], dtype=np.uint8)

    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images(n_train))
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", labels(n_train))
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images(n_test))
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels(n_test))


def image_ids(x: torch.Tensor) -> list[int]:
    return x.flatten(1).argmax(1).tolist()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_tiny_idx_set_loads(tmp_path: Path, name: str, gz: bool) -> None:
    write_tiny_mnist(tmp_path, n_train=30, n_test=10, gz=gz)
    assert dataset_available(name, data_dir=tmp_path)
    splits = load_dataset(name, data_dir=tmp_path)
    assert splits.kind == "classification" and splits.num_outputs == 10 and splits.name == name
    assert splits.input_shape == (1, 28, 28)
    assert len(splits.x_val) == min(2000, 30 // 5)
    assert len(splits.x_train) == 30 - len(splits.x_val)
    assert len(splits.x_test) == 10
    for x in (splits.x_train, splits.x_val, splits.x_test):
        assert x.dtype == torch.float32
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert y.dtype == torch.int64

    train_ids, val_ids = image_ids(splits.x_train), image_ids(splits.x_val)
    assert sorted(train_ids + val_ids) == list(range(30))  # disjoint, nothing lost
    assert image_ids(splits.x_test) == list(range(10))  # official test set, in file order
    for x, y in [
        (splits.x_train, splits.y_train),
        (splits.x_val, splits.y_val),
        (splits.x_test, splits.y_test),
    ]:
        assert y.tolist() == [mnist_label(i) for i in image_ids(x)]

    assert abs(float(splits.x_train.mean())) < 1e-5
    assert float(splits.x_train.std(correction=0)) == pytest.approx(1.0, abs=1e-4)


def test_idx_val_split_is_capped_at_2000(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path, n_train=784, n_test=3)
    splits = load_dataset("mnist", data_dir=tmp_path)
    assert len(splits.x_val) == 784 // 5


def test_idx_set_is_cached_per_folder_and_deterministic(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path / "a")
    write_tiny_mnist(tmp_path / "b", n_train=20)
    a = load_dataset("mnist", data_dir=tmp_path / "a")
    assert load_dataset("mnist", data_dir=str(tmp_path / "a" / ".." / "a")) is a
    b = load_dataset("mnist", data_dir=tmp_path / "b")
    assert len(b.x_train) + len(b.x_val) == 20
    clear_cache()
    again = load_dataset("mnist", data_dir=tmp_path / "a")
    assert again is not a
    for x, y in zip(splits_tensors(a), splits_tensors(again), strict=True):
        assert torch.equal(x, y)


def test_idx_mismatched_counts_are_rejected(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(ValueError, match="29 labels"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_idx_files_say_what_and_where(tmp_path: Path, name: str) -> None:
    assert not dataset_available(name, data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset(name, data_dir=tmp_path)
    assert isinstance(excinfo.value, FileNotFoundError)
    message = str(excinfo.value)
    assert str(tmp_path) in message
    for file in IDX_FILES:
        assert file in message
    if name == "fashion_mnist":
        assert "apt-get install dataset-fashion-mnist" in message
    assert "data_dir" in message


def test_one_missing_idx_file_is_named(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(excinfo.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message


def test_mnist_without_data_dir_says_to_pass_one() -> None:
    assert not dataset_available("mnist")
    with pytest.raises(DatasetNotFoundError, match="data_dir"):
        load_dataset("mnist")


# --- CIFAR-10 from tiny pickles -------------------------------------------------------------


def cifar_label(index: int) -> int:
    return (7 * index + 2) % 10


def cifar_batch(start: int, n: int) -> dict[bytes, object]:
    """Image k has red = 5 * k + 3 everywhere, green rising along x, blue rising along y."""
    red = (
        np.zeros((n, 32, 32), dtype=np.uint8) + (5 * np.arange(start, start + n) + 3)[:, None, None]
    )
    ramp = np.arange(32, dtype=np.uint8) * 8
    green = np.broadcast_to(ramp[None, None, :], (n, 32, 32))
    blue = np.broadcast_to(ramp[None, :, None], (n, 32, 32))
    data = np.concatenate([c.reshape(n, 1024) for c in (red, green, blue)], axis=1)
    return {
        b"batch_label": b"tiny",
        b"labels": [cifar_label(k) for k in range(start, start + n)],
        b"data": np.ascontiguousarray(data, dtype=np.uint8),
        b"filenames": [b"img%d.png" % k for k in range(start, start + n)],
    }


PER_BATCH, N_TEST = 4, 6  # 20 train images (ids 0..19), test images have ids 20..25


def tiny_cifar_files() -> dict[str, bytes]:
    files = {
        f"data_batch_{i}": pickle.dumps(cifar_batch((i - 1) * PER_BATCH, PER_BATCH))
        for i in range(1, 6)
    }
    files["test_batch"] = pickle.dumps(cifar_batch(5 * PER_BATCH, N_TEST))
    files["batches.meta"] = pickle.dumps({b"label_names": [b"x"] * 10})
    return files


def write_tiny_cifar(folder: Path, layout: str) -> None:
    write_cifar_files(folder, layout, tiny_cifar_files())


def write_cifar_files(folder: Path, layout: str, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "archive":
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, payload in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        return
    target = folder if layout == "flat" else folder / "cifar-10-batches-py"
    target.mkdir(exist_ok=True)
    for name, payload in files.items():
        (target / name).write_bytes(payload)


@pytest.mark.parametrize("layout", ["flat", "nested", "archive"])
def test_tiny_cifar_loads(tmp_path: Path, layout: str) -> None:
    write_tiny_cifar(tmp_path, layout)
    assert dataset_available("cifar10", data_dir=tmp_path)
    splits = load_dataset("cifar10", data_dir=tmp_path)
    n_train_total = 5 * PER_BATCH
    assert splits.kind == "classification" and splits.num_outputs == 10
    assert splits.input_shape == (3, 32, 32)
    assert len(splits.x_val) == min(2000, n_train_total // 5)
    assert len(splits.x_train) + len(splits.x_val) == n_train_total
    assert len(splits.x_test) == N_TEST

    for x in (splits.x_train, splits.x_val, splits.x_test):
        assert x.dtype == torch.float32
        red, green, blue = x[:, 0], x[:, 1], x[:, 2]
        # Red is constant within an image; green varies only along x, blue only along y.
        assert torch.all(red.amax((1, 2)) == red.amin((1, 2)))
        assert torch.all(green.amax(1) == green.amin(1)) and torch.all(
            green[:, 0, 1:] > green[:, 0, :-1]
        )
        assert torch.all(blue.amax(2) == blue.amin(2)) and torch.all(
            blue[:, 1:, 0] > blue[:, :-1, 0]
        )

    # Standardising is increasing per channel, so ranking the red values of all official train
    # images (train + val) recovers their ids 0..19; the labels must follow the same images.
    red_train = torch.cat([splits.x_train, splits.x_val])[:, 0, 0, 0]
    labels = torch.cat([splits.y_train, splits.y_val])
    ids = torch.argsort(torch.argsort(red_train))
    assert labels.tolist() == [cifar_label(int(i)) for i in ids]
    assert len(set(red_train.tolist())) == n_train_total  # no image twice
    # The test set keeps file order: red rises, labels follow the ids 20..25.
    red_test = splits.x_test[:, 0, 0, 0]
    assert torch.all(red_test[1:] > red_test[:-1])
    assert splits.y_test.tolist() == [cifar_label(k) for k in range(20, 20 + N_TEST)]

    x = splits.x_train.double()
    torch.testing.assert_close(
        x.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        x.std((0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_cifar_archive_and_folder_give_the_same_splits(tmp_path: Path) -> None:
    write_tiny_cifar(tmp_path / "folder", "nested")
    write_tiny_cifar(tmp_path / "archive", "archive")
    a = load_dataset("cifar10", data_dir=tmp_path / "folder")
    b = load_dataset("cifar10", data_dir=tmp_path / "archive")
    for x, y in zip(splits_tensors(a), splits_tensors(b), strict=True):
        assert torch.equal(x, y)


def test_missing_cifar_files_say_what_and_where(tmp_path: Path) -> None:
    assert not dataset_available("cifar10", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path) in message
    assert "data_batch_1" in message and "test_batch" in message
    assert "cifar-10-python.tar.gz" in message


def test_incomplete_cifar_archive_is_reported(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        payload = pickle.dumps(cifar_batch(0, 2))
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetNotFoundError, match="test_batch"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar_without_data_dir_says_to_pass_one() -> None:
    assert not dataset_available("cifar10")
    with pytest.raises(DatasetNotFoundError, match="data_dir"):
        load_dataset("cifar10")


# --- the real Fashion-MNIST from Debian's package ---------------------------------------------


@pytest.mark.skipif(
    not dataset_available("fashion_mnist"),
    reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DEFAULT_DIR} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist() -> None:
    splits = load_dataset("fashion_mnist")
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (58000, 2000, 10000)
    assert splits.input_shape == (1, 28, 28)
    assert splits.num_outputs == 10
    for y in (splits.y_train, splits.y_val, splits.y_test):
        assert sorted(torch.unique(y).tolist()) == list(range(10))
    # The official test set is balanced: 1000 images per class.
    assert torch.bincount(splits.y_test).tolist() == [1000] * 10
    assert abs(float(splits.x_train.mean())) < 1e-3
    assert float(splits.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    assert load_dataset("fashion_mnist", data_dir=FASHION_MNIST_DEFAULT_DIR) is splits


# --- CIFAR-10 files that are not what they claim ---------------------------------------------


class CreatesMarker:
    """What a crafted pickle does: call any function with any arguments while loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["nested", "archive"])
def test_cifar_pickle_that_would_run_code_is_refused(tmp_path: Path, layout: str) -> None:
    marker = tmp_path / "marker"
    files = tiny_cifar_files()
    files["data_batch_2"] = pickle.dumps({b"data": CreatesMarker(marker), b"labels": []})
    write_cifar_files(tmp_path / "cifar", layout, files)
    with pytest.raises(DatasetFileError) as excinfo:
        load_dataset("cifar10", data_dir=tmp_path / "cifar")
    message = str(excinfo.value)
    assert "data_batch_2" in message and ".system" in message and "refused" in message
    assert not marker.exists()


def test_official_python2_cifar_pickles_load(tmp_path: Path) -> None:
    """The official files: protocol 2, arrays from numpy.core.multiarray._reconstruct."""
    files = {}
    for name, payload in tiny_cifar_files().items():
        batch = pickle.loads(payload)
        raw = pickle.dumps(batch, protocol=2)
        files[name] = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in files["test_batch"]
    write_cifar_files(tmp_path, "nested", files)
    splits = load_dataset("cifar10", data_dir=tmp_path)
    assert splits.y_test.tolist() == [cifar_label(k) for k in range(20, 20 + N_TEST)]


def test_truncated_cifar_archive_names_the_archive(tmp_path: Path) -> None:
    write_tiny_cifar(tmp_path, "archive")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetFileError, match=re.escape(str(archive))):
        load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize("layout", ["nested", "archive"])
def test_garbage_cifar_batch_names_the_file(tmp_path: Path, layout: str) -> None:
    files = tiny_cifar_files()
    files["data_batch_3"] = b"\x80\x04not a pickle at all" + bytes(range(256))
    write_cifar_files(tmp_path, layout, files)
    with pytest.raises(DatasetFileError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)
