"""A trained GANNO policy as the LR scheduler of an ordinary PyTorch loop.

Trains one model three times from the same initial weights on the same minibatches: with
`GannoScheduler` (per-layer LRs from the policy), with cosine annealing and with a constant
LR, all starting at `--lr`. Prints the final losses and writes `scheduler_example.png`
(val loss curves and the LRs per layer) to `--out`.

    python examples/scheduler_example.py --policy policy.pt --out /tmp/ganno_example
    python examples/scheduler_example.py --policy policy.pt --data fashion_mnist

`--data synthetic` (default): an MLP with a LayerNorm on sklearn's `make_classification`.
`--data fashion_mnist`: a small CNN with max pooling on Fashion-MNIST (Debian's
dataset-fashion-mnist package, or `--data-dir`). Neither is one of GANNO's training tasks.
A few minutes at most on a CPU.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganno_env import GannoScheduler
from ganno_env.policy import load_policy


def synthetic_data(seed: int):
    """5 classes, 20 features (12 informative), standardised; 4000/1000/1000 split."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=6000, n_features=20, n_informative=12, n_redundant=4, n_classes=5,
        n_clusters_per_class=2, class_sep=1.0, flip_y=0.02, random_state=seed,
    )  # fmt: skip
    x = (x - x[:4000].mean(0)) / x[:4000].std(0)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    splits = (x[:4000], y[:4000]), (x[4000:5000], y[4000:5000]), (x[5000:], y[5000:])
    model = nn.Sequential(
        nn.Linear(20, 128), nn.LayerNorm(128), nn.ReLU(),  # LayerNorm joins its Linear's layer
        nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 5),
    )  # fmt: skip
    return splits, model


def fashion_mnist_data(data_dir: str | None):
    """Fashion-MNIST's fixed splits (val: 2000 images) and a 2-conv CNN with max pooling."""
    from ganno_env.datasets import load_dataset

    d = load_dataset("fashion_mnist", data_dir)
    splits = (d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip
    return splits, model


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy, in eval mode, 2000 examples at a time."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(x), 2000):
        out = model(x[start : start + 2000])
        loss += F.cross_entropy(out, y[start : start + 2000], reduction="sum").item()
        correct += (out.argmax(1) == y[start : start + 2000]).sum().item()
    model.train()
    return loss / len(x), correct / len(x)


def train(schedule, model, splits, args, policy, interval, cycles):
    """One run; returns val losses (every `interval` steps) and LRs per layer per step."""
    (x_train, y_train), (x_val, y_val), _ = splits
    steps = interval * cycles
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    val_curve, lr_curve = [evaluate(model, x_val, y_val)[0]], []
    scheduler = None
    if schedule == "ganno":

        def val_loss() -> float:
            # the scheduler asks every `interval` steps, right after the loop below has
            # measured the current weights: reuse that number (else: evaluate here)
            return val_curve[-1]

        scheduler = GannoScheduler(optimizer, model, policy, interval, val_loss, cycles)
    elif schedule == "cosine":
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    order = torch.Generator().manual_seed(args.seed)  # same minibatches for every run
    batches = torch.randperm(len(x_train), generator=order)
    while len(batches) < steps * args.batch_size:
        batches = torch.cat([batches, torch.randperm(len(x_train), generator=order)])
    for step in range(steps):
        index = batches[step * args.batch_size : (step + 1) * args.batch_size]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_train[index]), y_train[index])
        loss.backward()
        if scheduler is not None:
            scheduler.observe(loss)  # after backward, before step: sets LRs every interval
        lr_curve.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        if schedule == "cosine":
            cosine.step()
        if (step + 1) % interval == 0:
            val_curve.append(evaluate(model, x_val, y_val)[0])
    return val_curve, np.array(lr_curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="policy.pt", help="a trained GANNO policy.pt")
    parser.add_argument("--out", default="scheduler_example", help="folder for the PNG")
    parser.add_argument("--data", choices=("synthetic", "fashion_mnist"), default="synthetic")
    parser.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST files")
    parser.add_argument("--lr", type=float, default=0.05, help="initial LR of every run")
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    policy = load_policy(args.policy)
    torch.manual_seed(args.seed)
    if args.data == "synthetic":
        splits, model = synthetic_data(args.seed)
    else:
        splits, model = fashion_mnist_data(args.data_dir)
    # the policy's own decision rhythm: interval steps per decision, max_cycles decisions
    probe = GannoScheduler(torch.optim.SGD(model.parameters(), lr=args.lr), model, policy)
    interval, cycles = probe.interval, probe.max_cycles
    probe.close()
    print(
        f"{args.data}: {probe.num_layers} layers, {interval * cycles} SGD steps of batch "
        f"{args.batch_size}, initial LR {args.lr:g}, a decision every {interval} steps"
    )

    results = {}
    for schedule in ("ganno", "cosine", "constant"):
        start = time.perf_counter()
        run_model = copy.deepcopy(model)
        val_curve, lrs = train(schedule, run_model, splits, args, policy, interval, cycles)
        test_loss, test_accuracy = evaluate(run_model, *splits[2])
        results[schedule] = (val_curve, lrs)
        print(
            f"{schedule:>9}: final val loss {val_curve[-1]:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {test_accuracy:.4f}  ({time.perf_counter() - start:.0f} s)"
        )
    print("GANNO's final LR per layer:", " ".join(f"{lr:.3g}" for lr in results["ganno"][1][-1]))
    path = plot(results, interval, args)
    print(f"wrote {path}")


def plot(results, interval, args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for schedule, (val_curve, lrs) in results.items():
        steps = np.arange(len(val_curve)) * interval
        ax_loss.plot(steps, val_curve, label=schedule)
        if schedule == "ganno":
            for j in range(lrs.shape[1]):
                ax_lr.plot(lrs[:, j], label=f"ganno layer {j}")
        else:
            ax_lr.plot(lrs[:, 0], "--", label=schedule)
    ax_loss.set(xlabel="step", ylabel="val loss", title=f"{args.data}: val loss")
    top = max(v for curve, _ in results.values() for v in curve if math.isfinite(v))
    ax_loss.set_ylim(0, min(top, 3.0 * results["constant"][0][0]))
    ax_lr.set(xlabel="step", ylabel="learning rate", yscale="log", title="learning rates")
    for ax in (ax_loss, ax_lr):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scheduler_example.png"
    fig.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    main()
