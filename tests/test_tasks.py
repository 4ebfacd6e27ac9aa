"""Every bundled task trains; local-file tasks read the standard formats; users add tasks."""

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from ganno_env import TASKS, DataSplits, Task, get_task, layerwise_lr_v0, register_task
from ganno_env.datasets import write_idx

BUNDLED = [name for name, task in TASKS.items() if task.data in
           ("digits", "breast_cancer", "wine", "moons", "blobs", "regression")]  # fmt: skip
SENSIBLE_LR = {"regression_mlp": 0.01}


def val_loss_after_one_episode(max_cycles=6, interval=20, **kwargs):
    env = layerwise_lr_v0.parallel_env(max_cycles=max_cycles, interval=interval, **kwargs)
    _, infos = env.reset(seed=0)
    start = next(iter(infos.values()))["val_loss"]
    while env.agents:
        _, _, _, _, infos = env.step({a: 2 for a in env.agents})  # factor 1.0: constant LR
    end = next(iter(infos.values()))
    assert not end["diverged"]
    return start, end


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_task_learns_under_a_constant_lr(name):
    lr = SENSIBLE_LR.get(name, 0.1)
    start, end = val_loss_after_one_episode(task=name, conditions={"initial_lr": lr})
    assert end["val_loss"] < 0.7 * start
    assert np.isfinite(end["test_loss"])


def write_tiny_idx(folder, n_train=120, n_test=40, seed=0):
    """Tiny MNIST-format files whose label is readable from the image (a lit row)."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
        for k, label in enumerate(labels):
            images[k, 2 * label + 4, :] = 255
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), labels)


@pytest.mark.parametrize("name", ["mnist_mlp", "fashion_mnist_mlp", "mnist_cnn"])
def test_idx_tasks_train_on_tiny_files_from_data_dir(tmp_path, name):
    write_tiny_idx(tmp_path)
    start, end = val_loss_after_one_episode(
        task=name, data_dir=str(tmp_path), conditions={"initial_lr": 0.1, "batch_size": 16}
    )
    assert end["val_loss"] < 0.9 * start


def test_cifar10_tasks_read_the_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, size=20)
        data = rng.integers(0, 40, size=(20, 3, 32, 32)).astype(np.uint8)
        data[np.arange(20), labels % 3] += 200  # the label shows in one colour channel
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data.reshape(20, -1), b"labels": labels.tolist()}, f)
    for task in ("cifar10_mlp", "cifar10_cnn"):
        env = layerwise_lr_v0.parallel_env(task=task, data_dir=str(tmp_path), max_cycles=2,
                                           interval=3)  # fmt: skip
        obs, _ = env.reset(seed=0)
        assert len(obs) == get_task(task).depth + 1
        env.step({a: 2 for a in env.agents})


def test_fashion_mnist_real_files_train():
    task = get_task("fashion_mnist_mlp")
    if not task.available():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's dataset-fashion-mnist (see .ci/run)")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    start, end = val_loss_after_one_episode(
        task="fashion_mnist_mlp", conditions={"initial_lr": 0.1}, max_cycles=4
    )
    assert end["val_loss"] < 0.6 * start and end["test_accuracy"] > 0.6


def test_users_register_their_own_model_factory_and_tensors():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(300, 6)), dtype=torch.float32)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = DataSplits(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:],
                      num_outputs=2, kind="classification", name="mine")  # fmt: skip

    def factory(width, depth, input_shape, num_outputs):
        return nn.Sequential(
            nn.Linear(input_shape[0], width), nn.LayerNorm(width), nn.Tanh(),
            nn.Linear(width, num_outputs),
        )  # fmt: skip

    task = Task("user_task", data, arch="custom", model_factory=factory, width=16, depth=1)
    register_task(task)
    try:
        env = layerwise_lr_v0.parallel_env(task="user_task", conditions={"initial_lr": 0.2})
        assert env.max_layers == 2  # the LayerNorm joins the first Linear's layer
        start, end = val_loss_after_one_episode(task=task, conditions={"initial_lr": 0.2})
        assert end["val_loss"] < 0.5 * start
        with pytest.raises(ValueError, match="already registered"):
            register_task(task)
    finally:
        TASKS.pop("user_task")
