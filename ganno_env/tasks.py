"""The registry of inner training tasks: dataset x architecture x loss x batch size.

A task says what network is trained on what data; the initial conditions (learning rate,
init scale, seed, and optionally width, depth and batch size) vary around it. Users add
their own with `register_task(Task(...))`, or pass a `Task` straight to the env.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

from torch import nn

from ganno_env.datasets import DataSplits, dataset_available, load_dataset
from ganno_env.models import CNN, MLP

ModelFactory = Callable[[int, int, Sequence[int], int], nn.Module]
"""(width, depth, input_shape, num_outputs) -> an untrained nn.Module."""

DataSource = Union[str, DataSplits, Callable[[], DataSplits]]  # noqa: UP007 (a runtime alias)
"""A dataset name from `ganno_env.datasets.DATASET_NAMES`, ready splits, or a loader."""

ARCHITECTURES = ("mlp", "cnn", "custom")


@dataclass(frozen=True)
class Task:
    """One inner training problem.

    The loss follows the data: cross-entropy for classification, MSE for regression.
    `depth` counts hidden blocks, so a task has `depth + 1` layers (agents).
    """

    name: str
    data: DataSource
    arch: str = "mlp"
    width: int = 64
    depth: int = 3
    batch_size: int = 32
    data_dir: str | None = None
    model_factory: ModelFactory | None = field(default=None, compare=False)
    description: str = ""

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"task {self.name!r}: arch={self.arch!r}; allowed: {ARCHITECTURES}")
        if self.arch == "custom" and self.model_factory is None:
            raise ValueError(f"task {self.name!r}: arch='custom' needs a model_factory")
        for key in ("width", "depth", "batch_size"):
            value = getattr(self, key)
            low = 0 if key == "depth" else 1
            if not isinstance(value, int) or value < low:
                raise ValueError(f"task {self.name!r}: {key}={value!r}; allowed: an int >= {low}")

    def load_data(self) -> DataSplits:
        """The task's fixed train/val/test splits (cached per process for named datasets)."""
        if isinstance(self.data, DataSplits):
            return self.data
        if isinstance(self.data, str):
            return load_dataset(self.data, self.data_dir)
        return self.data()

    def available(self) -> bool:
        """False when the task reads local files that are not there."""
        if isinstance(self.data, str):
            return dataset_available(self.data, self.data_dir)
        return True

    def num_layers(self, depth: int | None = None) -> int:
        """Layers (agents) of this task's network at a given depth."""
        return (self.depth if depth is None else depth) + 1

    def build_model(self, width: int, depth: int, data: DataSplits) -> nn.Module:
        """A fresh, untrained network for this task."""
        if self.model_factory is not None:
            return self.model_factory(width, depth, data.input_shape, data.num_outputs)
        if self.arch == "cnn":
            return CNN(data.input_shape, width, depth, data.num_outputs)
        in_features = 1
        for size in data.input_shape:
            in_features *= size
        return MLP(in_features, width, depth, data.num_outputs)


TASKS: dict[str, Task] = {}


def register_task(task: Task, overwrite: bool = False) -> Task:
    """Add a task to the registry, so env configs and condition files can name it."""
    if task.name in TASKS and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered; pass overwrite=True")
    TASKS[task.name] = task
    return task


def get_task(task: str | Task) -> Task:
    """Look a task up by name (a `Task` passes through)."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"task={task!r} is unknown; known tasks: {sorted(TASKS)}")
    return TASKS[task]


for _task in (
    Task("digits_mlp", "digits", description="sklearn digits 8x8, MLP 64-64-64-10 (default)"),
    Task("digits_cnn", "digits", arch="cnn", width=16, depth=2, description="digits, 2-conv CNN"),
    Task("breast_cancer_mlp", "breast_cancer", width=32, depth=2, description="binary tabular"),
    Task("wine_mlp", "wine", width=32, depth=2, batch_size=16, description="3-class tabular"),
    Task("moons_mlp", "moons", width=32, depth=2, description="generated 2-D moons"),
    Task("blobs_mlp", "blobs", width=32, depth=2, description="generated 4-class blobs"),
    Task("regression_mlp", "regression", width=64, depth=2, description="generated, MSE loss"),
    Task("fashion_mnist_mlp", "fashion_mnist", width=128, depth=2, batch_size=64),
    Task("fashion_mnist_cnn", "fashion_mnist", arch="cnn", width=32, depth=2, batch_size=64),
    Task("mnist_mlp", "mnist", width=128, depth=2, batch_size=64, description="local IDX files"),
    Task("mnist_cnn", "mnist", arch="cnn", width=32, depth=2, batch_size=64),
    Task("cifar10_mlp", "cifar10", width=256, depth=2, batch_size=64, description="local files"),
    Task("cifar10_cnn", "cifar10", arch="cnn", width=32, depth=3, batch_size=64),
):
    register_task(_task)
