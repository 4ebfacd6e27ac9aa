"""Observation features: what each layer's agent sees of its own training dynamics.

One implementation serves the env and the LR scheduler: `layer_statistics` reduces an
interval's accumulated gradients and weights to per-layer numbers, and
`observation_features` turns them into the clipped float32 vectors the agents read.
Every tensor here has a leading population axis N (use N=1 for a single network).

Features v2 are scale-free: no feature carries the absolute value of the LR, the weights
or the gradients. Those depend on the task, the init scale and the loss scale, so a policy
that reads them meets values at unseen initial LRs that it never saw in training, and
extrapolates (v1 raised an LR of 3 to the upper bound). v2 measures the LR, the weights
and the gradients against their values at the first decision (`FeatureReference`), and
the step size as `lr * grad_rms / weight_rms`: the relative change that one SGD step makes,
known at the probe before any update, and clipped at 1 so that any larger step reads as
"far too large" instead of as a value never seen.

Both sets stay here (`FEATURE_SETS`), since a policy reads exactly the features it was
trained on: v1 (12 features, absolute log10 LR, weight RMS and gradient RMS) is what env
`layerwise_lr_v0` computes and its policies expect; v2 (13, scale-free) is what
`layerwise_lr_v1` computes. `FEATURES`, `FEATURE_NAMES`, `OBS_LOW` and `OBS_HIGH` are those
of `FEATURES_VERSION`, the current set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FEATURES_VERSION = 2


@dataclass(frozen=True)
class Feature:
    name: str
    low: float
    high: float
    doc: str


# The three v1 features that v2 replaced; the other nine are shared by both sets.
_ABSOLUTE: tuple[Feature, ...] = (
    Feature("log10_lr", -8.0, 2.0, "log10 of the layer's current learning rate"),
    Feature("log10_weight_rms", -8.0, 4.0, "log10 RMS of the layer's weights and bias"),
    Feature("log10_grad_rms", -10.0, 4.0, "log10 RMS of the per-step gradients this interval"),
)
_RELATIVE: tuple[Feature, ...] = (
    Feature("log10_relative_lr", -8.0, 8.0, "log10(the layer's LR / its LR at the first decision)"),
    Feature(
        "log10_step_ratio",
        -10.0,
        0.0,
        "log10(LR x gradient RMS / weight RMS): relative weight change of one SGD step",
    ),
    Feature(
        "log10_weight_growth", -4.0, 4.0, "log10(weight RMS / weight RMS at the first decision)"
    ),
    Feature(
        "log10_grad_growth", -8.0, 4.0, "log10(gradient RMS / gradient RMS at the first decision)"
    ),
)
_SHARED: tuple[Feature, ...] = (
    Feature(
        "log10_update_ratio", -10.0, 2.0, "log10 of |weights change this interval| / |weights|"
    ),
    Feature("grad_cosine", -1.0, 1.0, "cosine between this and the last interval's mean grad"),
    Feature("grad_noise_ratio", 0.0, 1.0, "share of the per-step gradient energy that is noise"),
    Feature("relative_depth", 0.0, 1.0, "layer index / (layers - 1): 0 = input, 1 = output"),
    Feature("log_train_loss_ratio", -10.0, 5.0, "ln(interval mean train loss / initial val loss)"),
    Feature("log_val_loss_ratio", -10.0, 5.0, "ln(val loss / initial val loss)"),
    Feature("val_log_change", -10.0, 10.0, "ln(val loss) - ln(last interval's val loss)"),
    Feature("progress", 0.0, 1.0, "decisions taken / max_cycles"),
    Feature("last_log_factor", -5.0, 5.0, "ln of the LR factor this layer last chose"),
)
FEATURES_V1: tuple[Feature, ...] = _ABSOLUTE + _SHARED
FEATURES_V2: tuple[Feature, ...] = _RELATIVE + _SHARED
FEATURE_SETS: dict[int, tuple[Feature, ...]] = {1: FEATURES_V1, 2: FEATURES_V2}

FEATURES: tuple[Feature, ...] = FEATURE_SETS[FEATURES_VERSION]
FEATURE_NAMES = tuple(f.name for f in FEATURES)
OBS_LOW = np.array([f.low for f in FEATURES], dtype=np.float32)
OBS_HIGH = np.array([f.high for f in FEATURES], dtype=np.float32)


def feature_set(version: int) -> tuple[Feature, ...]:
    """The features of a version; ValueError naming the known versions otherwise.

    Every reader of a version number (env config, policy files) goes through here, so an
    unknown one fails the same clear way wherever it comes from.
    """
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        raise ValueError(
            f"features_version={version!r}; allowed: one of {sorted(FEATURE_SETS)} (an int)"
        )
    if int(version) not in FEATURE_SETS:
        raise ValueError(
            f"features_version={version!r} is unknown; allowed: {sorted(FEATURE_SETS)}"
        )
    return FEATURE_SETS[int(version)]


def feature_names(version: int = FEATURES_VERSION) -> tuple[str, ...]:
    """Names of a version's features, in observation order."""
    return tuple(f.name for f in feature_set(version))


def feature_bounds(version: int = FEATURES_VERSION) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 arrays of a version's features: the observation space's bounds."""
    features = feature_set(version)
    low = np.array([f.low for f in features], dtype=np.float32)
    high = np.array([f.high for f in features], dtype=np.float32)
    return low, high


_TINY = 1e-30


@dataclass(frozen=True)
class LayerStats:
    """Per-network, per-layer statistics of one interval; each a [N, L] tensor."""

    weight_rms: torch.Tensor
    grad_rms: torch.Tensor
    update_ratio: torch.Tensor
    grad_cosine: torch.Tensor
    noise_ratio: torch.Tensor


def layer_statistics(
    layers: list[list[torch.Tensor]],
    start: list[list[torch.Tensor]] | None,
    grad_sum: list[list[torch.Tensor]],
    grad_sq_sum: list[list[torch.Tensor]],
    previous_mean_grad: list[list[torch.Tensor]] | None,
    steps: int,
) -> LayerStats:
    """Reduce one interval to per-layer statistics.

    Arguments are lists over layers of lists of [N, ...] tensors: the weights now, the
    weights at the start of the interval (None: no update yet), the sum and the elementwise
    sum of squares of the per-step gradients, and the last interval's mean gradient.
    """
    weight_sq, grad_sq, mean_sq, update_sq, energy, cos_dot, prev_sq = ([] for _ in range(7))
    numel = []
    for j, params in enumerate(layers):
        mean_grad = [g / steps for g in grad_sum[j]]
        numel.append(sum(p[0].numel() for p in params))
        weight_sq.append(sum_sq(params))
        energy.append(sum(_per_net(s) for s in grad_sq_sum[j]) / steps)
        mean_sq.append(sum_sq(mean_grad))
        update_sq.append(
            sum_sq([p - s for p, s in zip(params, start[j])])
            if start is not None
            else torch.zeros_like(weight_sq[-1])
        )
        if previous_mean_grad is not None:
            cos_dot.append(sum(_per_net(a * b) for a, b in zip(mean_grad, previous_mean_grad[j])))
            prev_sq.append(sum_sq(previous_mean_grad[j]))
    weight_sq, energy, mean_sq, update_sq = map(
        torch.stack, (weight_sq, energy, mean_sq, update_sq)
    )
    count = torch.tensor(numel, dtype=weight_sq.dtype, device=weight_sq.device)
    if previous_mean_grad is not None:
        cosine = torch.stack(cos_dot) / (mean_sq.sqrt() * torch.stack(prev_sq).sqrt() + _TINY)
    else:
        cosine = torch.zeros_like(mean_sq)
    noise = 1.0 - mean_sq / (energy + _TINY) if steps > 1 else torch.zeros_like(mean_sq)
    return LayerStats(
        weight_rms=(weight_sq.T / count).sqrt(),
        grad_rms=(energy.T / count).sqrt(),
        update_ratio=(update_sq / (weight_sq + _TINY)).sqrt().T,
        grad_cosine=cosine.T.clamp(-1.0, 1.0),
        noise_ratio=noise.T.clamp(0.0, 1.0),
    )


@dataclass(frozen=True)
class FeatureReference:
    """Per-layer values [N, L] at the first decision, which v2 features are relative to."""

    lrs: np.ndarray
    weight_rms: np.ndarray
    grad_rms: np.ndarray

    @classmethod
    def at_start(cls, lrs: np.ndarray, stats: LayerStats) -> FeatureReference:
        """The reference from the initial LRs and the probe's statistics."""
        return cls(
            lrs=np.asarray(lrs, dtype=np.float64).copy(),
            weight_rms=_numpy(stats.weight_rms),
            grad_rms=_numpy(stats.grad_rms),
        )


def observation_features(
    lrs: np.ndarray,
    stats: LayerStats,
    reference: FeatureReference | None,
    train_loss_ratio: np.ndarray,
    val_loss_ratio: np.ndarray,
    val_log_change: np.ndarray,
    progress: float,
    last_log_factor: np.ndarray,
    version: int = FEATURES_VERSION,
) -> np.ndarray:
    """Observations [N, L, F] (float32, finite, within the bounds of `version`'s features).

    `lrs` and `last_log_factor` are [N, L]; the loss arguments are [N] and shared by all
    layers of a network. Non-finite inputs (a diverged network) map to the bounds.
    `version` picks the feature set (`FEATURE_SETS`); v1 does not read `reference`.
    """
    low, high = feature_bounds(version)
    if version != 1 and reference is None:
        raise ValueError(f"features v{version} are relative to a FeatureReference; got None")
    lrs = np.asarray(lrs, dtype=np.float64)
    n, num_layers = lrs.shape
    per_layer = {name: _numpy(value) for name, value in vars(stats).items()}
    depth = np.arange(num_layers) / max(num_layers - 1, 1)

    def shared(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.float64)[:, None], (n, num_layers))

    with np.errstate(divide="ignore", invalid="ignore"):
        if version == 1:
            scale = [
                np.log10(lrs),
                np.log10(per_layer["weight_rms"]),
                np.log10(per_layer["grad_rms"]),
            ]
        else:
            scale = [
                np.log10(lrs / reference.lrs),
                np.log10(lrs * per_layer["grad_rms"] / per_layer["weight_rms"]),
                np.log10(per_layer["weight_rms"] / reference.weight_rms),
                np.log10(per_layer["grad_rms"] / np.maximum(reference.grad_rms, _TINY)),
            ]
        columns = scale + [
            np.log10(per_layer["update_ratio"]),
            per_layer["grad_cosine"],
            per_layer["noise_ratio"],
            np.broadcast_to(depth, (n, num_layers)),
            shared(np.log(train_loss_ratio)),
            shared(np.log(val_loss_ratio)),
            shared(val_log_change),
            np.full((n, num_layers), progress),
            np.asarray(last_log_factor, dtype=np.float64),
        ]
    obs = np.stack(columns, axis=-1)
    obs = np.nan_to_num(obs, nan=0.0, posinf=np.inf, neginf=-np.inf)
    return np.clip(obs, low, high).astype(np.float32)


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().to("cpu", torch.float64).numpy()


def _per_net(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1)


def sum_sq(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Each network's sum of squares [N] over a layer's [N, ...] tensors."""
    return sum(_per_net(t.square()) for t in tensors)
