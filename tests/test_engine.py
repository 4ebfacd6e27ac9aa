"""The batched engine computes what plain per-network PyTorch training computes.

Every test compares `PopulationTrainer` (stacked [N, ...] parameters, hand-batched MLP or
`vmap(functional_call)`, fused `_foreach` optimiser steps) with a straightforward
reference: one ordinary `nn.Module` per network, built with the same seeds as
`PopulationTrainer.build`, trained alone with `torch.optim.SGD` / `torch.optim.Adam`
(single-tensor implementation) using one param group per layer (`layer_groups`) with that
layer's LR, on exactly the minibatches the engine used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ganno_env.datasets import DataSplits
from ganno_env.engine import ADAM_BETAS, ADAM_EPS, PopulationTrainer
from ganno_env.features import layer_statistics
from ganno_env.models import CNN, MLP, init_parameters, layer_groups

SEEDS = (11, 22, 33)
SCALES = (1.0, 0.5, 1.5)
BATCH = 32  # 200 train examples: batches straddle epoch boundaries
TIGHT = {"rtol": 1e-5, "atol": 1e-6}
STATS = {"rtol": 1e-4, "atol": 1e-6}


# ------------------------------------------------------------------------- data sets
def classification_data(image_shape=(10,), classes=3, seed=0) -> DataSplits:
    """Random inputs; labels from a random linear map, so training makes progress."""
    g = torch.Generator().manual_seed(seed)
    features = math.prod(image_shape)
    w = torch.randn(features, classes, generator=g)

    def part(n):
        x = torch.randn(n, *image_shape, generator=g)
        logits = x.reshape(n, -1) @ w + 0.5 * torch.randn(n, classes, generator=g)
        return x, logits.argmax(1)

    (xtr, ytr), (xva, yva), (xte, yte) = part(200), part(50), part(50)
    return DataSplits(xtr, ytr, xva, yva, xte, yte, classes, "classification", "random")


def regression_data(features=10, outputs=2, seed=1) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(features, outputs, generator=g) / features**0.5

    def part(n):
        x = torch.randn(n, features, generator=g)
        return x, torch.tanh(x @ w) + 0.1 * torch.randn(n, outputs, generator=g)

    (xtr, ytr), (xva, yva), (xte, yte) = part(200), part(50), part(50)
    return DataSplits(xtr, ytr, xva, yva, xte, yte, outputs, "regression", "random_regression")


# --------------------------------------------------------------------------- models
def make_mlp(outputs=3):
    return lambda: MLP(10, 16, 2, outputs)  # 3 layers


def make_cnn():
    return lambda: CNN((1, 8, 8), width=4, depth=2, num_outputs=3)  # 3 layers


class Normed(nn.Module):
    """A user model the fast path does not know: Linear, LayerNorm, ReLU, Linear."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 12)
        self.norm = nn.LayerNorm(12)  # joins fc's layer
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.fc(x))))


# ------------------------------------------------------------------------ reference
def reference_modules(make_module, seeds, scales):
    """The modules `PopulationTrainer.build` makes, built independently the same way."""
    modules = []
    for seed, scale in zip(seeds, scales):
        init_seed, _ = np.random.SeedSequence(int(seed)).generate_state(2)
        module = make_module()
        init_parameters(module, torch.Generator().manual_seed(int(init_seed)), scale)
        modules.append(module)
    return modules


def engine_batches(make_module, data, seeds, steps, batch_size=BATCH):
    """Minibatch indices [steps, N, B] the engine draws.

    Taken from `_take_batches` of a twin trainer built with the same seeds, rather than
    replicating the sampling scheme here: that keeps these equivalence tests valid if the
    engine's sampling changes. The scheme itself (and its per-seed independence) is pinned
    separately by `test_minibatches_are_each_networks_own_reshuffled_epochs`.
    """
    twin = PopulationTrainer.build(make_module, data, batch_size, seeds, [1.0] * len(seeds))
    return twin._take_batches(steps)


class Reference:
    """One network trained alone with torch.optim, one param group per layer."""

    def __init__(self, module, lrs_row, optimizer="sgd", momentum=0.0, classification=True):
        self.module = module
        self.classification = classification
        self.groups = layer_groups(module)
        named = dict(module.named_parameters())
        param_groups = [
            {"params": [named[name] for name in group], "lr": float(lr)}
            for group, lr in zip(self.groups, lrs_row)
        ]
        if optimizer == "adam":
            self.opt = torch.optim.Adam(param_groups, betas=ADAM_BETAS, eps=ADAM_EPS, foreach=False)
        else:
            self.opt = torch.optim.SGD(param_groups, momentum=momentum, foreach=False)

    def set_lrs(self, lrs_row):
        for group, lr in zip(self.opt.param_groups, lrs_row):
            group["lr"] = float(lr)

    def loss(self, x, y):
        out = self.module(x)
        return F.cross_entropy(out, y) if self.classification else F.mse_loss(out, y)

    def step(self, x, y):
        """One optimiser step; returns the loss before it and the gradients {name: grad}."""
        self.opt.zero_grad()
        loss = self.loss(x, y)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in self.module.named_parameters()}
        self.opt.step()
        return loss.item(), grads

    def params(self):
        return {n: p.detach().clone() for n, p in self.module.named_parameters()}


def references(make_module, data, lrs, seeds=SEEDS, scales=SCALES, **kwargs):
    classification = data.kind == "classification"
    modules = reference_modules(make_module, seeds, scales)
    return [
        Reference(m, lrs[i].tolist(), classification=classification, **kwargs)
        for i, m in enumerate(modules)
    ]


def run_references(refs, data, batches):
    """Train each reference on its own column of `batches` [steps, N, B].

    Returns per network: mean loss, and the per-step gradients.
    """
    mean_losses, step_grads = [], []
    for i, ref in enumerate(refs):
        losses, grads = [], []
        for idx in batches[:, i]:
            loss, g = ref.step(data.x_train[idx], data.y_train[idx])
            losses.append(loss)
            grads.append(g)
        mean_losses.append(sum(losses) / len(losses))
        step_grads.append(grads)
    return torch.tensor(mean_losses), step_grads


def assert_module_matches(trainer, i, expected: dict[str, torch.Tensor], **tol):
    actual = dict(trainer.module(i).named_parameters())
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name].detach(), value, **tol, msg=f"net {i} {name}")


def expected_stats(refs, start, end, step_grads, previous_mean=None):
    """LayerStats computed by hand (float64) from the references' weights and grads.

    start/end: per network {name: weight}; step_grads: per network, per step {name: grad}.
    Returns ([N, L] tensors by statistic name, per network per layer mean grad vectors).
    """
    out = {k: [] for k in ("weight_rms", "grad_rms", "update_ratio", "grad_cosine", "noise_ratio")}
    means = []
    for i, ref in enumerate(refs):
        rows = {k: [] for k in out}
        net_means = []
        for j, group in enumerate(ref.groups):

            def flat(d, group=group):
                return torch.cat([d[n].double().flatten() for n in group])

            w, w0 = flat(end[i]), flat(start[i])
            g = torch.stack([flat(s) for s in step_grads[i]])  # [steps, numel]
            mean = g.mean(0)
            energy = g.square().sum(1).mean()
            rows["weight_rms"].append(w.square().mean().sqrt())
            rows["grad_rms"].append((energy / w.numel()).sqrt())
            rows["update_ratio"].append((w - w0).norm() / w.norm())
            noise = 1.0 - mean.square().sum() / energy if len(g) > 1 else torch.tensor(0.0)
            rows["noise_ratio"].append(noise.clamp(0, 1))
            if previous_mean is None:
                rows["grad_cosine"].append(torch.tensor(0.0, dtype=torch.float64))
            else:
                rows["grad_cosine"].append(F.cosine_similarity(mean, previous_mean[i][j], dim=0))
            net_means.append(mean)
        for k in out:
            out[k].append(torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in rows[k]]))
        means.append(net_means)
    return {k: torch.stack(v) for k, v in out.items()}, means


def assert_stats_match(stats, expected, **tol):
    for name, value in expected.items():
        torch.testing.assert_close(
            getattr(stats, name).double(), value, **(tol or STATS), msg=f"stat {name}"
        )


LRS_MLP = torch.tensor([[0.1, 0.05, 0.2], [0.02, 0.3, 0.1], [0.2, 0.2, 0.01]])


# ============================================================================ tests
def test_build_matches_independently_built_modules():
    data = classification_data()
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES)
    for i, module in enumerate(reference_modules(make_mlp(), SEEDS, SCALES)):
        for name, p in module.named_parameters():
            assert torch.equal(trainer.module(i).get_parameter(name), p), (i, name)
    assert trainer.num_layers == 3


def test_minibatches_are_each_networks_own_reshuffled_epochs():
    """Network i walks randperm epochs of its own data seed, across train calls and probe."""
    data = classification_data()
    lrs = torch.zeros(3, 3)
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES)
    drawn = [trainer._take_batches(4), trainer._take_batches(3)]
    trainer.probe()
    drawn.append(trainer._take_batches(5))  # the probed batch first, then 4 fresh
    trainer.train(lrs, 1)  # takes one batch
    drawn.append(trainer._take_batches(2))
    drawn = torch.cat(drawn)
    assert drawn.shape == (14, 3, BATCH)
    n_train = len(data.x_train)
    for i, seed in enumerate(SEEDS):
        _, data_seed = np.random.SeedSequence(seed).generate_state(2)
        g = torch.Generator().manual_seed(int(data_seed))
        stream = torch.cat([torch.randperm(n_train, generator=g) for _ in range(4)])
        expected = torch.cat([stream[: 12 * BATCH], stream[13 * BATCH : 15 * BATCH]])
        assert torch.equal(drawn[:, i].flatten(), expected), i
        alone = PopulationTrainer.build(make_mlp(), data, BATCH, [seed], [SCALES[i]])
        assert torch.equal(alone._take_batches(12)[:, 0], drawn[:12, i])


# ---------------------------------------------------------------- 1. fast path, SGD
def test_mlp_sgd_matches_reference_params_loss_and_stats():
    data = classification_data()
    steps = (5, 4)
    batches = engine_batches(make_mlp(), data, SEEDS, sum(steps))
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES)
    assert trainer._fast_mlp  # the hand-batched path
    refs = references(make_mlp(), data, LRS_MLP)
    previous = None
    done = 0
    for k, lrs in zip(steps, (LRS_MLP, LRS_MLP.flip(0))):
        for i, ref in enumerate(refs):
            ref.set_lrs(lrs[i].tolist())
        start = [ref.params() for ref in refs]
        loss, stats = trainer.train(lrs, k)
        ref_loss, step_grads = run_references(refs, data, batches[done : done + k])
        done += k
        torch.testing.assert_close(loss, ref_loss, **TIGHT)
        for i, ref in enumerate(refs):
            assert_module_matches(trainer, i, ref.params(), **TIGHT)
        expected, previous = expected_stats(
            refs, start, [r.params() for r in refs], step_grads, previous
        )
        assert_stats_match(stats, expected)
        assert stats.weight_rms.shape == (3, 3)
    assert trainer.steps_done == sum(steps)


def test_network_equals_a_population_of_one_with_its_seed():
    data = classification_data()
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES)
    trainer.train(LRS_MLP, 6)
    for i, seed in enumerate(SEEDS):
        alone = PopulationTrainer.build(make_mlp(), data, BATCH, [seed], [SCALES[i]])
        alone.train(LRS_MLP[i : i + 1], 6)
        assert_module_matches(trainer, i, dict(alone.module(0).named_parameters()), **TIGHT)


def scaled_inputs(data: DataSplits, scale: float) -> DataSplits:
    """The same data with every split's inputs multiplied by `scale`."""
    return DataSplits(
        scale * data.x_train, data.y_train, scale * data.x_val, data.y_val,
        scale * data.x_test, data.y_test, data.num_outputs, data.kind, data.name,
    )  # fmt: skip


@pytest.mark.parametrize(
    "make_module, image_shape",
    [(make_mlp(), (10,)), (make_cnn(), (1, 8, 8)), (lambda: Normed(), (10,))],
    ids=["mlp", "cnn", "vmap"],
)
def test_each_network_trains_and_evaluates_on_its_own_input_scale(make_module, image_shape):
    """Network i with input scale s trains as a population of one on inputs times s."""
    data = classification_data(image_shape)
    input_scales = (2.0, 0.5, 1.0)
    trainer = PopulationTrainer.build(
        make_module, data, BATCH, SEEDS, SCALES, input_scales=input_scales
    )
    lrs = torch.full((3, trainer.num_layers), 0.05)
    probe_losses, _ = trainer.probe()
    trainer.train(lrs, 5)
    val, test = trainer.evaluate("val")[0], trainer.evaluate("test")[0]
    for i, (seed, scale) in enumerate(zip(SEEDS, input_scales)):
        alone = PopulationTrainer.build(
            make_module, scaled_inputs(data, scale), BATCH, [seed], [SCALES[i]]
        )
        torch.testing.assert_close(probe_losses[i], alone.probe()[0][0], **TIGHT)
        alone.train(lrs[i : i + 1], 5)
        assert_module_matches(trainer, i, dict(alone.module(0).named_parameters()), **TIGHT)
        torch.testing.assert_close(val[i], alone.evaluate("val")[0][0], **TIGHT)
        torch.testing.assert_close(test[i], alone.evaluate("test")[0][0], **TIGHT)
    # the scales matter: a network scaled by 2 is not the network with plain inputs
    plain = PopulationTrainer.build(make_module, data, BATCH, SEEDS[:1], SCALES[:1])
    assert not torch.allclose(plain.evaluate("val")[0][0], trainer.evaluate("val")[0][0])


# ----------------------------------------------------------------------- 2. gradients
@pytest.mark.parametrize("make_module", [make_mlp(), lambda: Normed()], ids=["mlp", "vmap"])
def test_gradients_and_probe_stats_match_reference(make_module):
    data = classification_data()
    batch = engine_batches(make_module, data, SEEDS, 1)[0]  # [N, B]
    trainer = PopulationTrainer.build(make_module, data, BATCH, SEEDS, SCALES)
    before = [p.detach().clone() for p in trainer.params]
    losses, stats = trainer.probe()
    for p, b in zip(trainer.params, before):
        assert torch.equal(p, b)  # probe does not update

    # the engine's per-network gradient, as its training step computes it
    engine_losses, engine_grad = trainer._gradient(*trainer._batch(batch))
    engine_grads = trainer._views(engine_grad.clone())

    refs = references(make_module, data, torch.zeros(3, trainer.num_layers))
    ref_losses = []
    expected = {"weight_rms": [], "grad_rms": []}
    for i, ref in enumerate(refs):
        idx = batch[i]
        ref.module.zero_grad()
        loss = ref.loss(data.x_train[idx], data.y_train[idx])
        loss.backward()
        ref_losses.append(loss.item())
        named = dict(ref.module.named_parameters())
        for name, g in zip(trainer.names, engine_grads):
            torch.testing.assert_close(g[i], named[name].grad, **TIGHT, msg=f"{i} {name}")
        # per-layer statistics by hand: RMS over the layer's weights and over its grads
        w_rms, g_rms = [], []
        for group in ref.groups:
            w = torch.cat([named[n].detach().double().flatten() for n in group])
            g = torch.cat([named[n].grad.double().flatten() for n in group])
            w_rms.append(w.square().mean().sqrt())
            g_rms.append(g.square().mean().sqrt())
        expected["weight_rms"].append(torch.stack(w_rms))
        expected["grad_rms"].append(torch.stack(g_rms))
    torch.testing.assert_close(losses, torch.tensor(ref_losses), **TIGHT)
    torch.testing.assert_close(engine_losses.detach(), torch.tensor(ref_losses), **TIGHT)
    for name, value in expected.items():
        torch.testing.assert_close(getattr(stats, name).double(), torch.stack(value), **STATS)
    assert torch.equal(stats.update_ratio, torch.zeros(3, trainer.num_layers))
    assert torch.equal(stats.noise_ratio, torch.zeros(3, trainer.num_layers))
    assert torch.equal(stats.grad_cosine, torch.zeros(3, trainer.num_layers))


@pytest.mark.parametrize(
    "make_module, data_kwargs",
    [(make_mlp(), {}), (make_mlp(outputs=2), {"regression": True}), (lambda: Normed(), {})],
    ids=["mlp-classification", "mlp-regression", "vmap"],
)
def test_each_networks_gradient_is_its_own_loss_gradient_times_its_grad_scale(
    make_module, data_kwargs
):
    data = regression_data() if data_kwargs.get("regression") else classification_data()
    grad_scales = (0.5, 3.0, 1.0)
    batch = engine_batches(make_module, data, SEEDS, 1)[0]
    trainer = PopulationTrainer.build(
        make_module, data, BATCH, SEEDS, SCALES, grad_scales=grad_scales
    )
    losses, grad = trainer._gradient(*trainer._batch(batch))
    grads = trainer._views(grad.clone())
    refs = references(make_module, data, torch.zeros(3, trainer.num_layers))
    for i, ref in enumerate(refs):
        ref.module.zero_grad()
        loss = ref.loss(data.x_train[batch[i]], data.y_train[batch[i]])
        (loss * grad_scales[i]).backward()
        torch.testing.assert_close(losses[i], loss.detach(), **TIGHT)  # the unscaled loss
        named = dict(ref.module.named_parameters())
        for name, g in zip(trainer.names, grads):
            torch.testing.assert_close(g[i], named[name].grad, **TIGHT, msg=f"{i} {name}")


def test_probe_batch_is_the_first_batch_of_the_next_train():
    data = classification_data()
    batches = engine_batches(make_mlp(), data, SEEDS, 3)
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES)
    probe_losses, _ = trainer.probe()
    probe_again, _ = trainer.probe()  # peeking twice shows the same batch
    torch.testing.assert_close(probe_again, probe_losses, rtol=0, atol=0)
    loss, _ = trainer.train(LRS_MLP, 3)
    refs = references(make_mlp(), data, LRS_MLP)
    ref_loss, _ = run_references(refs, data, batches)
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    for i, ref in enumerate(refs):
        assert_module_matches(trainer, i, ref.params(), **TIGHT)
    # the probe's losses are those of the untrained networks on the first batch
    fresh = references(make_mlp(), data, LRS_MLP)
    expected = [
        r.loss(data.x_train[batches[0, i]], data.y_train[batches[0, i]]).item()
        for i, r in enumerate(fresh)
    ]
    torch.testing.assert_close(probe_losses, torch.tensor(expected), **TIGHT)


# ------------------------------------------------------------- 3. per-layer LR applied
@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_zero_lr_freezes_exactly_that_layer_of_that_network(optimizer, momentum):
    data = classification_data()
    trainer = PopulationTrainer.build(
        make_mlp(), data, BATCH, SEEDS, SCALES, optimizer=optimizer, momentum=momentum
    )
    groups = trainer.groups
    before = [dict(trainer.module(i).named_parameters()) for i in range(3)]
    lrs = LRS_MLP.clone() if optimizer == "sgd" else torch.full((3, 3), 1e-3)
    lrs[1, 1] = 0.0
    trainer.train(lrs, 4)
    for i in range(3):
        after = dict(trainer.module(i).named_parameters())
        for j, group in enumerate(groups):
            for name in group:
                same = torch.equal(after[name], before[i][name])
                if (i, j) == (1, 1):
                    assert same, f"net {i} layer {j} ({name}) moved with LR 0"
                else:
                    assert not same, f"net {i} layer {j} ({name}) did not move"


@pytest.mark.parametrize(
    "make_module,data_kwargs",
    [(make_mlp(), {}), (make_cnn(), {"image_shape": (1, 8, 8)})],
    ids=["mlp", "cnn"],
)
def test_step_clip_brings_each_large_step_down_to_the_clip_and_leaves_the_rest(
    make_module, data_kwargs
):
    """One SGD step: a layer whose step ratio lr * rms(g) / rms(w) exceeds the clip changes
    its weights by exactly the clip (relative RMS); every other layer steps as unclipped."""
    data = classification_data(**data_kwargs)
    lrs = LRS_MLP * 20
    free = PopulationTrainer.build(make_module, data, BATCH, SEEDS, SCALES)
    _, stats = free.probe()  # the gradient of the first step, before it
    ratios = lrs * stats.grad_rms / stats.weight_rms
    clip = float(ratios.median())  # about half of the layers above it
    clipped = PopulationTrainer.build(make_module, data, BATCH, SEEDS, SCALES, step_clip=clip)
    before = [_layer_vectors(clipped, i) for i in range(3)]
    clipped.train(lrs, 1)
    free.train(lrs, 1)
    above = 0
    for i in range(3):
        after, unclipped = _layer_vectors(clipped, i), _layer_vectors(free, i)
        for j in range(3):
            step = (after[j] - before[i][j]).norm() / before[i][j].norm()
            if ratios[i, j] > clip:
                above += 1
                torch.testing.assert_close(step, torch.tensor(clip), rtol=1e-4, atol=0)
            else:
                torch.testing.assert_close(after[j], unclipped[j], **TIGHT, msg=f"{i} {j}")
    assert 0 < above < 9, "the clip must bind on some layers and not on others"


def _layer_vectors(trainer: PopulationTrainer, i: int) -> list[torch.Tensor]:
    """Network i's parameters, one flat vector per layer (weight and bias together)."""
    named = dict(trainer.module(i).named_parameters())
    return [torch.cat([named[name].flatten() for name in group]) for group in trainer.groups]


# --------------------------------------------------------------- 4. momentum and Adam
@pytest.mark.parametrize(
    "make_module,data_kwargs",
    [(make_mlp(), {}), (make_cnn(), {"image_shape": (1, 8, 8)})],
    ids=["mlp", "cnn"],
)
@pytest.mark.parametrize(
    "optimizer,momentum,lr_scale,tol",
    [
        ("sgd", 0.9, 1.0, TIGHT),
        ("adam", 0.0, 0.02, {"rtol": 1e-4, "atol": 1e-5}),
    ],
    ids=["momentum", "adam"],
)
def test_momentum_and_adam_match_torch_optim(
    make_module, data_kwargs, optimizer, momentum, lr_scale, tol
):
    """Two intervals with different LRs: the LR must apply at use, not be baked into state."""
    data = classification_data(**data_kwargs)
    steps = (3, 3)
    batches = engine_batches(make_module, data, SEEDS, sum(steps))
    trainer = PopulationTrainer.build(
        make_module, data, BATCH, SEEDS, SCALES, optimizer=optimizer, momentum=momentum
    )
    first = LRS_MLP * lr_scale
    refs = references(make_module, data, first, optimizer=optimizer, momentum=momentum)
    done = 0
    for k, lrs in zip(steps, (first, first.flip(1))):
        for i, ref in enumerate(refs):
            ref.set_lrs(lrs[i].tolist())
        loss, stats = trainer.train(lrs, k)
        ref_loss, _ = run_references(refs, data, batches[done : done + k])
        done += k
        torch.testing.assert_close(loss, ref_loss, **tol)
        for i, ref in enumerate(refs):
            assert_module_matches(trainer, i, ref.params(), **tol)
        assert all(torch.isfinite(v).all() for v in vars(stats).values())


# ------------------------------------------ 5. the CNN's grouped path and the vmap path
def make_strided_cnn():
    return lambda: CNN((1, 16, 16), width=4, depth=2, num_outputs=3)  # stride 2 per block


@pytest.mark.parametrize(
    "make_module,data_kwargs,num_layers,grouped",
    [
        (make_cnn(), {"image_shape": (1, 8, 8)}, 3, True),
        (make_strided_cnn(), {"image_shape": (1, 16, 16)}, 3, True),
        (make_cnn(), {"image_shape": (1, 8, 8)}, 3, False),  # the CNN under vmap
        (lambda: Normed(), {}, 2, False),
    ],
    ids=["cnn-grouped", "strided-cnn-grouped", "cnn-vmap", "layernorm-vmap"],
)
def test_cnn_and_vmap_paths_sgd_match_reference(make_module, data_kwargs, num_layers, grouped):
    data = classification_data(**data_kwargs)
    seeds, scales = SEEDS[:2], SCALES[:2]
    lrs = LRS_MLP[:2, :num_layers]
    steps = 6
    batches = engine_batches(make_module, data, seeds, steps)
    trainer = PopulationTrainer.build(make_module, data, BATCH, seeds, scales)
    assert not trainer._fast_mlp and trainer.num_layers == num_layers
    if not grouped:
        trainer._fast_cnn = False  # the CNN takes the general path that other models take
    assert trainer._fast_cnn == grouped
    refs = references(make_module, data, lrs, seeds=seeds, scales=scales)
    start = [ref.params() for ref in refs]
    loss, stats = trainer.train(lrs, steps)
    ref_loss, step_grads = run_references(refs, data, batches)
    torch.testing.assert_close(loss, ref_loss, **TIGHT)
    for i, ref in enumerate(refs):
        assert_module_matches(trainer, i, ref.params(), **TIGHT)
    expected, _ = expected_stats(refs, start, [r.params() for r in refs], step_grads)
    assert_stats_match(stats, expected)
    if num_layers == 2:  # the LayerNorm trained, under its Linear's LR
        norm = trainer.module(0).norm.weight
        assert not torch.equal(norm, torch.ones_like(norm))
    val_loss, val_acc = trainer.evaluate("val")
    ref_val = [ref.loss(data.x_val, data.y_val).item() for ref in refs]
    torch.testing.assert_close(val_loss, torch.tensor(ref_val), **TIGHT)
    ref_acc = [(ref.module(data.x_val).argmax(1) == data.y_val).float().mean() for ref in refs]
    torch.testing.assert_close(val_acc, torch.stack(ref_acc))


class DoubledCNN(CNN):
    """A subclass with its own forward, which the grouped path would not know."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_a_cnn_subclass_is_trained_through_its_own_forward():
    data = classification_data(image_shape=(1, 8, 8))
    trainer = PopulationTrainer.build(
        lambda: DoubledCNN((1, 8, 8), width=4, depth=2, num_outputs=3), data, BATCH,
        SEEDS[:2], SCALES[:2],
    )  # fmt: skip
    assert not trainer._fast_cnn
    val_loss, _ = trainer.evaluate("val")
    expected = [F.cross_entropy(trainer.module(i)(data.x_val), data.y_val) for i in range(2)]
    torch.testing.assert_close(val_loss, torch.stack(expected), **TIGHT)


# --------------------------------------------------------------------- 6. regression
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_regression_mse_on_fast_path(optimizer):
    data = regression_data()
    lrs = LRS_MLP if optimizer == "sgd" else LRS_MLP * 0.02
    tol = TIGHT if optimizer == "sgd" else {"rtol": 1e-4, "atol": 1e-5}
    steps = 7
    batches = engine_batches(make_mlp(2), data, SEEDS, steps)
    trainer = PopulationTrainer.build(make_mlp(2), data, BATCH, SEEDS, SCALES, optimizer=optimizer)
    assert trainer._fast_mlp and not trainer.classification
    refs = references(make_mlp(2), data, lrs, optimizer=optimizer)
    loss, _ = trainer.train(lrs, steps)
    ref_loss, _ = run_references(refs, data, batches)
    torch.testing.assert_close(loss, ref_loss, **tol)
    for i, ref in enumerate(refs):
        assert_module_matches(trainer, i, ref.params(), **tol)
    for split, x, y in (("val", data.x_val, data.y_val), ("test", data.x_test, data.y_test)):
        split_loss, accuracy = trainer.evaluate(split)
        assert accuracy is None
        expected = [F.mse_loss(ref.module(x), y).item() for ref in refs]
        torch.testing.assert_close(split_loss, torch.tensor(expected), **TIGHT)


# ----------------------------------------------------------------------- 7. evaluate
@pytest.mark.parametrize("val_limit", [None, 20])
def test_evaluate_matches_reference_loss_and_accuracy(val_limit):
    data = classification_data()
    steps = 8
    batches = engine_batches(make_mlp(), data, SEEDS, steps)
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES, val_limit=val_limit)
    refs = references(make_mlp(), data, LRS_MLP)
    trainer.train(LRS_MLP, steps)
    run_references(refs, data, batches)
    end = len(data.x_val) if val_limit is None else val_limit
    for split, x, y in (
        ("val", data.x_val[:end], data.y_val[:end]),
        ("test", data.x_test, data.y_test),
    ):
        loss, accuracy = trainer.evaluate(split)
        with torch.no_grad():
            outs = [ref.module(x) for ref in refs]
        expected_loss = torch.stack([F.cross_entropy(o, y) for o in outs])
        expected_acc = torch.stack([(o.argmax(1) == y).float().mean() for o in outs])
        torch.testing.assert_close(loss, expected_loss, **TIGHT)
        torch.testing.assert_close(accuracy, expected_acc, rtol=0, atol=0)
    # the networks differ, so a mix-up between them would show
    assert len(set(trainer.evaluate("val")[0].tolist())) == 3


# ---------------------------------------------------------------- 8. layer_statistics
def _layer(values_w, values_b):
    """One layer: a [N, 2, 2] weight and an [N, 2] bias, N = len(values_w)."""
    w = torch.stack([torch.full((2, 2), float(v)) for v in values_w])
    b = torch.stack([torch.full((2,), float(v)) for v in values_b])
    return [w, b]


def test_layer_statistics_weight_rms_and_update_ratio():
    now = [_layer([2.0, 3.0], [2.0, 3.0]), _layer([4.0, -1.0], [0.0, 0.0])]
    start = [_layer([1.0, 3.0], [1.0, 3.0]), _layer([4.0, -1.0], [0.0, 2.0])]
    zeros = [[torch.zeros_like(t) for t in layer] for layer in now]
    stats = layer_statistics(now, start, zeros, zeros, None, 1)
    # layer 0: net 0 = all 2 (6 numbers), moved by 1 each: |dw|/|w| = 1/2; net 1 unmoved
    # layer 1: net 0: 4 weights of 4, no move; net 1: 4 weights of -1, biases 0 <- 2:
    #   |dw| = sqrt(2 * 4) = sqrt(8), |w| = sqrt(4) = 2 -> sqrt(2)
    expected_rms = torch.tensor([[2.0, math.sqrt(64 / 6)], [3.0, math.sqrt(4 / 6)]])
    torch.testing.assert_close(stats.weight_rms, expected_rms)
    torch.testing.assert_close(stats.update_ratio, torch.tensor([[0.5, 0.0], [0.0, 2**0.5]]))
    no_start = layer_statistics(now, None, zeros, zeros, None, 1)
    assert torch.equal(no_start.update_ratio, torch.zeros(2, 2))
    assert stats.weight_rms.shape == (2, 2)  # [N, L]


def test_layer_statistics_grad_cosine():
    g = _layer([1.0, -2.0], [3.0, 0.5])
    sq = [[t * t for t in g]]

    def cosine(previous):
        return layer_statistics([g], None, [g], sq, [previous], 1).grad_cosine

    torch.testing.assert_close(cosine([t.clone() for t in g]), torch.ones(2, 1))
    torch.testing.assert_close(cosine([5.0 * t for t in g]), torch.ones(2, 1))  # scale-free
    torch.testing.assert_close(cosine([-t for t in g]), -torch.ones(2, 1))
    # the layer is one vector: weight parts aligned, bias parts opposite with equal norm -> 0
    w = torch.ones(1, 2, 2)
    b = torch.full((1, 2), 2.0)
    cur = [w, b]
    prev = [w.clone(), -b * (4.0 / 8.0)]  # dot: 4 - 8 * 0.5 = 0
    cur_sq = [[t * t for t in cur]]
    stats = layer_statistics([cur], None, [cur], cur_sq, [prev], 1)
    torch.testing.assert_close(stats.grad_cosine, torch.zeros(1, 1), atol=1e-6, rtol=0)
    assert torch.equal(layer_statistics([g], None, [g], sq, None, 1).grad_cosine, torch.zeros(2, 1))
    # steps divide grad_sum into the mean grad, which must not change the cosine's sign
    torch.testing.assert_close(
        layer_statistics([g], None, [[3 * t for t in g]], sq, [[-t for t in g]], 3).grad_cosine,
        -torch.ones(2, 1),
    )


def test_layer_statistics_noise_ratio_and_grad_rms():
    g = _layer([1.0, -0.5], [2.0, 1.5])
    steps = 4
    same_sum = [[steps * t for t in g]]
    same_sq = [[steps * t * t for t in g]]
    stats = layer_statistics([g], None, same_sum, same_sq, None, steps)
    torch.testing.assert_close(stats.noise_ratio, torch.zeros(2, 1), atol=1e-6, rtol=0)
    # grad_rms: RMS over steps and elements of the per-step grads = RMS of g here
    expected_rms = torch.stack([torch.cat([t[i].flatten() for t in g]) for i in range(2)])
    expected_rms = expected_rms.square().mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(stats.grad_rms, expected_rms)
    # two steps g and -g cancel: all energy is noise
    cancel = layer_statistics(
        [g], None, [[torch.zeros_like(t) for t in g]], [[2 * t * t for t in g]], None, 2
    )
    torch.testing.assert_close(cancel.noise_ratio, torch.ones(2, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(cancel.grad_rms, expected_rms)
    # orthogonal unit steps (1, 0) and (0, 1): |mean|^2 = 1/2, energy = 1 -> noise 1/2
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    half = layer_statistics([[a]], None, [[a + b]], [[a * a + b * b]], None, 2)
    torch.testing.assert_close(half.noise_ratio, torch.tensor([[0.5]]))
    torch.testing.assert_close(half.grad_rms, torch.tensor([[0.5**0.5]]))
    # a single step has no noise estimate
    one = layer_statistics([g], None, [g], [[t * t for t in g]], None, 1)
    assert torch.equal(one.noise_ratio, torch.zeros(2, 1))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 3),
    shapes=st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=3), min_size=1, max_size=3),
    steps=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_layer_statistics_against_float64_reference(n, shapes, steps, seed):
    """Random layers (each one or two tensors) and per-step grads, checked in float64."""
    g = torch.Generator().manual_seed(seed)
    layers, start, per_step, previous = [], [], [], []
    for shape in shapes:
        tensors = [(n, *shape), (n, shape[0])] if len(shape) > 1 else [(n, *shape)]
        layers.append([torch.randn(s, generator=g) for s in tensors])
        start.append([torch.randn(s, generator=g) for s in tensors])
        per_step.append([torch.randn(steps, *s, generator=g) for s in tensors])
        previous.append([torch.randn(s, generator=g) for s in tensors])
    grad_sum = [[t.sum(0) for t in layer] for layer in per_step]
    grad_sq = [[t.square().sum(0) for t in layer] for layer in per_step]
    stats = layer_statistics(layers, start, grad_sum, grad_sq, previous, steps)

    def flat(tensors, i):
        return torch.cat([t[i].double().flatten() for t in tensors])

    for i in range(n):
        for j in range(len(shapes)):
            w, w0, prev = flat(layers[j], i), flat(start[j], i), flat(previous[j], i)
            gs = torch.stack([flat([t[s] for t in per_step[j]], i) for s in range(steps)])
            mean, energy = gs.mean(0), gs.square().sum(1).mean()
            expected = {
                "weight_rms": w.square().mean().sqrt(),
                "grad_rms": (energy / w.numel()).sqrt(),
                "update_ratio": (w - w0).norm() / w.norm(),
                "grad_cosine": F.cosine_similarity(mean, prev, dim=0),
                "noise_ratio": (1 - mean.square().sum() / energy).clamp(0, 1)
                if steps > 1
                else torch.tensor(0.0, dtype=torch.float64),
            }
            for name, value in expected.items():
                torch.testing.assert_close(
                    getattr(stats, name)[i, j].double(), value, rtol=1e-4, atol=1e-5, msg=name
                )


# ------------------------------------------------------------- 9. freeze and NaN
@pytest.mark.parametrize("optimizer,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
def test_freeze_zeroes_a_network_and_leaves_the_others_training(optimizer, momentum):
    data = classification_data()
    lrs = LRS_MLP if optimizer == "sgd" else LRS_MLP * 0.02
    kwargs = {"optimizer": optimizer, "momentum": momentum}
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES, **kwargs)
    clean = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES, **kwargs)
    for t in (trainer, clean):
        t.train(lrs, 3)
    trainer.freeze(np.array([False, True, False]))
    for p in trainer.params:
        assert torch.equal(p[1], torch.zeros_like(p[1]))
    for _ in range(2):
        loss, stats = trainer.train(lrs, 3)
        clean_loss, _ = clean.train(lrs, 3)
        assert torch.isfinite(loss).all()
        assert all(torch.isfinite(v).all() for v in vars(stats).values())
        for p in trainer.params:
            assert torch.equal(p[1], torch.zeros_like(p[1]))  # stays zero and finite
        for i in (0, 2):
            assert_module_matches(trainer, i, dict(clean.module(i).named_parameters()), **TIGHT)
        torch.testing.assert_close(loss[[0, 2]], clean_loss[[0, 2]], **TIGHT)
    probe_loss, probe_stats = trainer.probe()
    assert torch.isfinite(probe_loss).all()
    assert torch.equal(probe_stats.grad_rms[1], torch.zeros(3))
    assert torch.isfinite(trainer.evaluate("val")[0]).all()


@pytest.mark.parametrize(
    "make_module,data_kwargs,optimizer,momentum",
    [
        (make_mlp(), {}, "sgd", 0.0),
        (make_mlp(), {}, "sgd", 0.9),
        (make_mlp(), {}, "adam", 0.0),
        (make_cnn(), {"image_shape": (1, 8, 8)}, "adam", 0.0),  # the vmap path
    ],
    ids=["mlp-sgd", "mlp-momentum", "mlp-adam", "cnn-adam"],
)
def test_nan_in_one_network_never_reaches_another(make_module, data_kwargs, optimizer, momentum):
    data = classification_data(**data_kwargs)
    lrs = LRS_MLP if optimizer == "sgd" else LRS_MLP * 0.02
    kwargs = {"optimizer": optimizer, "momentum": momentum}
    trainer = PopulationTrainer.build(make_module, data, BATCH, SEEDS, SCALES, **kwargs)
    clean = PopulationTrainer.build(make_module, data, BATCH, SEEDS, SCALES, **kwargs)
    with torch.no_grad():
        trainer.params[0][1].view(-1)[0] = float("nan")
    others = [0, 2]

    def check_others(loss, clean_loss, stats, clean_stats):
        torch.testing.assert_close(loss[others], clean_loss[others], **TIGHT)
        for i in others:
            assert_module_matches(trainer, i, dict(clean.module(i).named_parameters()), **TIGHT)
        for name, value in vars(stats).items():
            torch.testing.assert_close(
                value[others], getattr(clean_stats, name)[others], **STATS, msg=name
            )

    loss, stats = trainer.train(lrs, 4)
    clean_loss, clean_stats = clean.train(lrs, 4)
    assert torch.isnan(loss[1])
    check_others(loss, clean_loss, stats, clean_stats)
    val, _ = trainer.evaluate("val")
    clean_val, _ = clean.evaluate("val")
    assert torch.isnan(val[1])
    torch.testing.assert_close(val[others], clean_val[others], **TIGHT)
    probe_loss, probe_stats = trainer.probe()
    clean_probe, clean_probe_stats = clean.probe()
    torch.testing.assert_close(probe_loss[others], clean_probe[others], **TIGHT)

    # freezing the diverged network clears its NaN, and the others carry on unchanged
    trainer.freeze(np.array([False, True, False]))
    for p in trainer.params:
        assert torch.equal(p[1], torch.zeros_like(p[1]))
    loss, stats = trainer.train(lrs, 4)
    clean_loss, clean_stats = clean.train(lrs, 4)
    assert torch.isfinite(loss).all()
    for p in trainer.params:
        assert torch.isfinite(p).all()
    check_others(loss, clean_loss, stats, clean_stats)
    assert torch.isfinite(trainer.evaluate("val")[0]).all()


def test_frozen_network_train_stats_show_no_gradient_like_probe():
    data = classification_data()
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES)
    trainer.train(LRS_MLP, 2)
    trainer.freeze(np.array([False, True, False]))
    _, probe_stats = trainer.probe()
    assert torch.equal(probe_stats.grad_rms[1], torch.zeros(3))
    _, stats = trainer.train(LRS_MLP, 3)
    assert torch.equal(stats.grad_rms[1], probe_stats.grad_rms[1])


def test_frozen_network_stats_are_finite_after_nan():
    data = classification_data()
    trainer = PopulationTrainer.build(make_mlp(), data, BATCH, SEEDS, SCALES)
    with torch.no_grad():
        trainer.params[0][1].view(-1)[0] = float("nan")
    trainer.train(LRS_MLP, 3)
    trainer.freeze(np.array([False, True, False]))
    _, stats = trainer.train(LRS_MLP, 3)
    for name, value in vars(stats).items():
        assert torch.isfinite(value).all(), name
