"""Offline datasets with fixed train/val/test splits for the inner training tasks.

Every episode trains a small network on one of these sets, so the data must load without a
network, give the same splits every time (otherwise rewards are not comparable across runs), and
load only once per process. Small sets come from scikit-learn (bundled or generated); the image
sets are read from the standard IDX / CIFAR-10 files on disk.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch
from sklearn import datasets as sk_datasets

DATASET_NAMES: tuple[str, ...] = (
    "digits",
    "breast_cancer",
    "wine",
    "moons",
    "blobs",
    "regression",
    "fashion_mnist",
    "mnist",
    "cifar10",
)

# Where Debian's dataset-fashion-mnist package installs the files.
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

_HOW_TO_GET = {
    "fashion_mnist": (
        "install Debian's package with `apt-get install dataset-fashion-mnist`, "
        "or pass data_dir=FOLDER holding the IDX files"
    ),
    "mnist": (
        "download the four MNIST IDX files (http://yann.lecun.com/exdb/mnist/) "
        "and pass data_dir=FOLDER holding them"
    ),
    "cifar10": (
        f"download {_CIFAR_ARCHIVE} (https://www.cs.toronto.edu/~kriz/cifar.html) and pass "
        f"data_dir=FOLDER holding the archive or its extracted {_CIFAR_FOLDER} folder"
    ),
}

# Validation images taken from an official training set: at most this many, at most a fifth.
_MAX_VAL_IMAGES = 2000
_STD_FLOOR = 1e-8


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk; the message says what was looked for and how to get it."""


class DatasetFileError(ValueError):
    """A dataset file is truncated, corrupt or holds what its format never does; names it."""


@dataclass(frozen=True)
class DataSplits:
    """Fixed train/val/test tensors of one dataset.

    Loaded splits are cached and shared, so the tensors must not be modified in place.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_outputs: int
    kind: str
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, as the network sees it."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> DataSplits:
        """Return a copy with all tensors on `device`, so training need not move batches."""
        moved = {
            field: getattr(self, field).to(device)
            for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
        }
        return dataclasses.replace(self, **moved)


# Loaded splits per (name, resolved data folder); reused so environment resets stay cheap.
_CACHE: dict[tuple[str, str | None], DataSplits] = {}


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> DataSplits:
    """Load `name` with its fixed splits, reading files only on the first call per folder.

    `data_dir` is where the files of fashion_mnist, mnist and cifar10 live; it is ignored for
    the bundled and generated sets. The returned object is shared between calls: do not modify
    its tensors in place.
    """
    _check_name(name)
    folder = _data_folder(name, data_dir)
    key = (name, None if folder is None else str(folder.resolve()))
    splits = _CACHE.get(key)
    if splits is None:
        splits = _LOADERS[name](folder)
        _CACHE[key] = splits
    return splits


def dataset_available(name: str, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Say whether `load_dataset` would find the files, without reading them."""
    _check_name(name)
    try:
        folder = _data_folder(name, data_dir)
        if name in ("fashion_mnist", "mnist"):
            _find_idx_files(name, folder)
        elif name == "cifar10":
            _find_cifar_source(folder)
    except DatasetNotFoundError:
        return False
    return True


def clear_cache() -> None:
    """Forget loaded splits, e.g. to free memory or to check that loading is deterministic."""
    _CACHE.clear()


# --- IDX format ----------------------------------------------------------------------------

# IDX type codes and their big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped if the name ends in .gz), the format of the MNIST-style sets.

    Returns a native-byte-order array with the file's element type and shape.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path} is truncated: header needs {header_size} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{path} holds {len(raw) - header_size} data bytes, but shape {shape} of "
            f"{dtype.newbyteorder('=')} needs {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write `array` in the IDX format (gzipped if the name ends in .gz).

    Supported element types: uint8, int8, int16, int32, float32, float64.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        supported = ", ".join(str(d.newbyteorder("=")) for d in _IDX_DTYPES.values())
        raise ValueError(f"IDX cannot store {array.dtype}; supported: {supported}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    if any(size >= 2**32 for size in array.shape):
        raise ValueError(f"IDX dimensions must be below 2**32, got {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        # mtime=0 keeps the output identical for identical input.
        with open(path, "wb") as raw_file, gzip.GzipFile(fileobj=raw_file, mode="wb", mtime=0) as f:
            f.write(header + body)
    else:
        with open(path, "wb") as f:
            f.write(header + body)


# --- shared helpers -------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")


def _data_folder(name: str, data_dir: str | os.PathLike[str] | None) -> Path | None:
    """The folder to read `name` from, or None for sets that need no files."""
    if name not in ("fashion_mnist", "mnist", "cifar10"):
        return None
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if name == "fashion_mnist":
        return FASHION_MNIST_DEFAULT_DIR
    files = _IDX_FILES if name == "mnist" else (_CIFAR_ARCHIVE,)
    raise DatasetNotFoundError(
        f"{name} has no default folder for its files ({', '.join(files)}); {_HOW_TO_GET[name]}."
    )


def _split_indices(n: int, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed 60/20/20 train/val/test indices; with labels, every class is spread evenly."""
    order = np.random.default_rng(0).permutation(n)
    if labels is not None:
        # Give each sample its relative position within its own class (in shuffled order) and
        # sort by it: any contiguous slice then holds each class in about its overall share.
        position = np.empty(n)
        shuffled_labels = labels[order]
        for label in np.unique(labels):
            members = np.flatnonzero(shuffled_labels == label)
            position[members] = (np.arange(len(members)) + 0.5) / len(members)
        order = order[np.argsort(position, kind="stable")]
    n_val = n_test = round(0.2 * n)
    n_train = n - n_val - n_test
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def _standardise_columns(train: np.ndarray, *others: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Scale each column by the train split's mean/std, so no test statistics leak in."""
    mean = train.mean(axis=0)
    std = np.maximum(train.std(axis=0), _STD_FLOOR)
    return tuple(
        torch.from_numpy(((part - mean) / std).astype(np.float32)) for part in (train, *others)
    )


def _standardise_images(x_train: torch.Tensor, *others: torch.Tensor, per_channel: bool) -> None:
    """Scale float images in place by the train split's global (or per-channel) mean/std."""
    if per_channel:
        std, mean = torch.std_mean(x_train, dim=(0, 2, 3), keepdim=True, correction=0)
    else:
        std, mean = torch.std_mean(x_train, correction=0)
    std = std.clamp_min(_STD_FLOOR)
    for part in (x_train, *others):
        part.sub_(mean).div_(std)


def _tabular_splits(
    name: str, x: np.ndarray, y: np.ndarray, kind: str, image_shape: tuple[int, ...] | None = None
) -> DataSplits:
    """Split and standardise a small in-memory set (features, or images when image_shape)."""
    labels = y if kind == "classification" else None
    train, val, test = _split_indices(len(x), labels)
    if image_shape is None:
        x_train, x_val, x_test = _standardise_columns(x[train], x[val], x[test])
    else:
        x_train, x_val, x_test = (
            torch.from_numpy(x[idx].reshape(-1, *image_shape).astype(np.float32))
            for idx in (train, val, test)
        )
        _standardise_images(x_train, x_val, x_test, per_channel=False)
    if kind == "classification":
        y_train, y_val, y_test = (
            torch.from_numpy(y[idx].astype(np.int64)) for idx in (train, val, test)
        )
        num_outputs = int(y.max()) + 1
    else:
        y = y.reshape(len(y), -1)
        y_train, y_val, y_test = _standardise_columns(y[train], y[val], y[test])
        num_outputs = y.shape[1]
    return DataSplits(x_train, y_train, x_val, y_val, x_test, y_test, num_outputs, kind, name)


def _image_splits(
    name: str,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    per_channel: bool,
) -> DataSplits:
    """Hold out a fixed validation part of an official train set; keep the official test set.

    Images are uint8 [n, channels, height, width].
    """
    n = len(train_labels)
    n_val = min(_MAX_VAL_IMAGES, n // 5)
    order = np.random.default_rng(0).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])

    def as_float(images: np.ndarray) -> torch.Tensor:
        return torch.tensor(images, dtype=torch.float32).div_(255.0)  # a copy, even if read-only

    x_train, x_val, x_test = (
        as_float(train_images[train]),
        as_float(train_images[val]),
        as_float(test_images),
    )
    _standardise_images(x_train, x_val, x_test, per_channel=per_channel)
    y_train, y_val, y_test = (
        torch.from_numpy(labels.astype(np.int64))
        for labels in (train_labels[train], train_labels[val], test_labels)
    )
    return DataSplits(x_train, y_train, x_val, y_val, x_test, y_test, 10, "classification", name)


def _check_labels(labels: np.ndarray, source: Any) -> None:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{source}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")


# --- bundled and generated sets ---------------------------------------------------------------


def _load_digits(_: Path | None) -> DataSplits:
    x, y = sk_datasets.load_digits(return_X_y=True)
    return _tabular_splits("digits", x / 16.0, y, "classification", image_shape=(1, 8, 8))


def _load_breast_cancer(_: Path | None) -> DataSplits:
    x, y = sk_datasets.load_breast_cancer(return_X_y=True)
    return _tabular_splits("breast_cancer", x, y, "classification")


def _load_wine(_: Path | None) -> DataSplits:
    x, y = sk_datasets.load_wine(return_X_y=True)
    return _tabular_splits("wine", x, y, "classification")


def _load_moons(_: Path | None) -> DataSplits:
    x, y = sk_datasets.make_moons(n_samples=1500, noise=0.25, random_state=0)
    return _tabular_splits("moons", x, y, "classification")


def _load_blobs(_: Path | None) -> DataSplits:
    x, y = sk_datasets.make_blobs(
        n_samples=1500, centers=4, n_features=8, cluster_std=2.0, random_state=0
    )
    return _tabular_splits("blobs", x, y, "classification")


def _load_regression(_: Path | None) -> DataSplits:
    x, y = sk_datasets.make_regression(
        n_samples=1500, n_features=16, n_informative=8, noise=10.0, random_state=0
    )
    return _tabular_splits("regression", x, y, "regression")


# --- MNIST-style IDX sets ---------------------------------------------------------------------


def _find_idx_files(name: str, folder: Path | None) -> dict[str, Path]:
    """Locate the four IDX files, raw or gzipped (raw preferred: faster to read)."""
    assert folder is not None
    found: dict[str, Path] = {}
    missing = []
    for base in _IDX_FILES:
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            missing.append(f"{base}[.gz]")
    if missing:
        raise DatasetNotFoundError(
            f"{name}: looked in {folder} for {', '.join(missing)} but did not find "
            f"{'it' if len(missing) == 1 else 'them'}; {_HOW_TO_GET[name]}."
        )
    return found


def _load_idx_set(name: str, folder: Path | None) -> DataSplits:
    files = _find_idx_files(name, folder)
    parts = []
    for prefix in ("train", "t10k"):
        images = read_idx(files[f"{prefix}-images-idx3-ubyte"])
        labels = read_idx(files[f"{prefix}-labels-idx1-ubyte"])
        if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
            raise ValueError(
                f"{name}: expected uint8 images [n, rows, cols] and labels [n] in {folder}, got "
                f"{images.dtype} {images.shape} and {labels.shape}"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"{name}: {prefix} set in {folder} has {len(images)} images "
                f"but {len(labels)} labels"
            )
        _check_labels(labels, files[f"{prefix}-labels-idx1-ubyte"])
        parts += [images[:, None], labels]
    return _image_splits(name, *parts, per_channel=False)


def _load_fashion_mnist(folder: Path | None) -> DataSplits:
    return _load_idx_set("fashion_mnist", folder)


def _load_mnist(folder: Path | None) -> DataSplits:
    return _load_idx_set("mnist", folder)


# --- CIFAR-10 ---------------------------------------------------------------------------------


def _find_cifar_source(folder: Path | None) -> Path:
    """The folder holding the batch files, or else the archive that contains them."""
    assert folder is not None
    for candidate in (folder, folder / _CIFAR_FOLDER):
        if all((candidate / file).is_file() for file in _CIFAR_FILES):
            return candidate
    archive = folder / _CIFAR_ARCHIVE
    if archive.is_file():
        return archive
    raise DatasetNotFoundError(
        f"cifar10: looked in {folder} and {folder / _CIFAR_FOLDER} for {', '.join(_CIFAR_FILES)}, "
        f"and for {archive}, but found none of these complete; {_HOW_TO_GET['cifar10']}."
    )


# What the batch files may ask the unpickler for: a dict of lists, bytes and numpy arrays.
# The official files (Python 2) reconstruct arrays with numpy.core.multiarray._reconstruct;
# copies written again by Python 3 use _frombuffer (protocol 5) or _codecs.encode (bytes,
# protocols 2 and below).
_CIFAR_BUILTINS = ("list", "dict", "str", "bytes", "int", "float")
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
    | {(module, name) for module in ("builtins", "__builtin__") for name in _CIFAR_BUILTINS}
)
# What a truncated or corrupt file raises while it is read and unpickled.
_CORRUPT = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    tarfile.TarError,
    zlib.error,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    struct.error,
)


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR-10 batch holds.

    A plain `pickle.load` calls whatever the file names, so a crafted file in `data_dir` could
    run any code; this one refuses every other global.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"it asks to load {module}.{name}, which a CIFAR-10 batch never holds; "
                "refused, since unpickling it could run code"
            )
        return super().find_class(module, name)


def _unpickle_cifar(f: IO[bytes], where: str) -> Any:
    """One batch file through `_CifarUnpickler`; ValueError naming the file if it is bad."""
    try:
        return _CifarUnpickler(f, encoding="bytes").load()
    except _CORRUPT as error:
        raise DatasetFileError(
            f"cifar10: cannot read {where}: {error}. Replace it with the official file "
            f"({_HOW_TO_GET['cifar10']})"
        ) from error


def _read_cifar_batches(source: Path) -> dict[str, Any]:
    """Unpickle the batch files from a folder, or straight from the archive without extracting.

    Only what the CIFAR-10 format holds is unpickled (`_CifarUnpickler`); a truncated or
    corrupt file raises ValueError naming it.
    """
    if source.is_dir():
        batches = {}
        for file in _CIFAR_FILES:
            with open(source / file, "rb") as f:
                batches[file] = _unpickle_cifar(f, str(source / file))
        return batches
    batches = {}
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:  # one pass: seeking back in a gzip stream decompresses again
                file = PurePosixPath(member.name).name
                if member.isfile() and file in _CIFAR_FILES and file not in batches:
                    f = tar.extractfile(member)
                    assert f is not None
                    with f:
                        batches[file] = _unpickle_cifar(f, f"{source}: {member.name}")
    except DatasetFileError:
        raise
    except _CORRUPT as error:
        raise DatasetFileError(
            f"cifar10: cannot read the archive {source} (truncated or corrupt?): {error}. "
            f"Replace it ({_HOW_TO_GET['cifar10']})"
        ) from error
    missing = [file for file in _CIFAR_FILES if file not in batches]
    if missing:
        raise DatasetNotFoundError(
            f"cifar10: archive {source} lacks {', '.join(missing)}; {_HOW_TO_GET['cifar10']}."
        )
    return batches


def _cifar_arrays(batch: dict[bytes, Any], source: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetFileError(f"cifar10: {source} should hold a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(
            f"cifar10: {source} should hold data [n, 3072] and n labels, got {data.shape} "
            f"and {labels.shape}"
        )
    _check_labels(labels, source)
    # Each row is the red plane, then green, then blue, each 32x32 in row-major order.
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(folder: Path | None) -> DataSplits:
    source = _find_cifar_source(folder)
    batches = _read_cifar_batches(source)
    arrays = {file: _cifar_arrays(batches[file], f"{source}: {file}") for file in _CIFAR_FILES}
    train_images = np.concatenate([arrays[file][0] for file in _CIFAR_FILES[:-1]])
    train_labels = np.concatenate([arrays[file][1] for file in _CIFAR_FILES[:-1]])
    test_images, test_labels = arrays["test_batch"]
    return _image_splits(
        "cifar10", train_images, train_labels, test_images, test_labels, per_channel=True
    )


_LOADERS: dict[str, Callable[[Path | None], DataSplits]] = {
    "digits": _load_digits,
    "breast_cancer": _load_breast_cancer,
    "wine": _load_wine,
    "moons": _load_moons,
    "blobs": _load_blobs,
    "regression": _load_regression,
    "fashion_mnist": _load_fashion_mnist,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
}
