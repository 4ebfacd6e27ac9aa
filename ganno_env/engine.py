"""The inner training engine: a population of independent networks trained in lockstep.

This is the only module that knows how a population is batched. Every parameter is held
stacked as one [N, ...] block of a single buffer (`flat`), so one forward, one backward and
three whole-buffer operations (gradient sum, squared-gradient sum, optimiser step) train all
N networks per step:

* MLPs (our `MLP` class) run hand-batched: `torch.baddbmm` over the population axis, with
  a hand-derived backward that writes the gradient straight into its buffer (no autograd).
* Any other `nn.Module` (CNNs, user models) runs through `torch.func.functional_call`
  under `torch.vmap`, differentiated by autograd.

Networks never mix: the loss summed over the population has, for each network's
parameters, exactly that network's gradient. Each network draws its initial weights and its
minibatch order from its own seed, so network i of a population follows the same
trajectory as a population of one with that seed (up to float rounding).

Inside `train` nothing reads a value back to the host, so on CUDA an interval runs without
synchronising; statistics are reduced once per interval.

On the CPU, the engine can run torch on `num_threads` threads (None: torch's setting) and
flushes denormal floats to zero, restoring both after each call. OpenMP threads that
spin-wait for a core another process holds make each step up to fifty times slower (two
env runners or benchmark workers on two cores), so parallel users set one thread each.
Squared tiny gradients (an LR of 1e-6, a converged network) are otherwise denormal and
make every step ten times slower.

Before building a population, `build` refuses what cannot work with a ValueError rather
than a hang or an error deep inside torch: a population whose estimated memory exceeds
what the device has free (`network_bytes`, `check_memory`), and layers that cannot be
trained under `torch.vmap` (`check_batchable`).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganno_env.datasets import DataSplits
from ganno_env.decision import step_clip_scale, step_ratio
from ganno_env.features import LayerStats, layer_statistics, sum_sq
from ganno_env.models import CNN, MLP, init_parameters, layer_groups

OPTIMIZERS = ("sgd", "adam")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
AGENT_BYTES = 200  # host memory per agent of an env (ids, spaces): measured about 240


class PopulationTrainer:
    """N copies of one architecture, each with its own seed, init scale and per-layer LRs."""

    def __init__(
        self,
        modules: Sequence[nn.Module],
        data: DataSplits,
        batch_size: int,
        data_seeds: Sequence[int],
        optimizer: str = "sgd",
        momentum: float = 0.0,
        device: str | torch.device = "cpu",
        val_limit: int | None = None,
        num_threads: int | None = None,
        grad_scales: Sequence[float] | None = None,
        updates: Sequence[tuple[str, Callable]] = (),
        input_scales: Sequence[float] | None = None,
        step_clip: float | None = None,
    ):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r}; allowed: {OPTIMIZERS}")
        self.n = len(modules)
        self.num_threads = num_threads
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        # no step larger than this step ratio (`ganno_env.decision.step_clip_scale`); None: off
        self.step_clip = None if step_clip is None else float(step_clip)
        # while the clip is on (math.inf: on, never binding), the largest step ratio any
        # step asked for since build [N, L], before the clip (`benchmarks.step_ratios`)
        self.largest_step_ratio: torch.Tensor | None = None
        self.classification = data.kind == "classification"

        self.groups = layer_groups(modules[0])
        self.num_layers = len(self.groups)
        self.names = [name for group in self.groups for name in group]
        self.param_layer = [j for j, group in enumerate(self.groups) for _ in group]
        # All parameters of all networks live in one buffer, parameter after parameter,
        # each an [N, *shape] block; `params` are views of it. Gradients, interval sums
        # and optimiser state share this layout, so an optimiser step is a few whole-buffer
        # operations whatever the number of parameters.
        per_module = [dict(m.named_parameters()) for m in modules]
        shapes = [per_module[0][name].shape for name in self.names]
        sizes = [self.n * shape.numel() for shape in shapes]
        self.flat = torch.cat(
            [torch.stack([p[name].detach() for p in per_module]).flatten() for name in self.names]
        ).to(self.device, torch.float32)
        self._blocks = [
            (sum(sizes[:k]), size, shape) for k, (size, shape) in enumerate(zip(sizes, shapes))
        ]
        self.params = self._views(self.flat)
        self._grad = torch.zeros_like(self.flat)
        self._grad_views = self._views(self._grad)
        self._minus_ones = torch.full((self.n, 1, batch_size), -1.0, device=self.device)
        self._template = copy.deepcopy(modules[0]).to(self.device)
        self._fast_mlp = isinstance(modules[0], MLP)
        self._fast_cnn = type(modules[0]) is CNN  # a subclass may change forward: vmap

        flat = self._fast_mlp  # the MLP path takes flattened inputs
        self.x_train = _inputs(data.x_train, flat, self.device)
        self.y_train = data.y_train.to(self.device)
        val_end = len(data.x_val) if val_limit is None else min(val_limit, len(data.x_val))
        self.x_val = _inputs(data.x_val[:val_end], flat, self.device)
        self.y_val = data.y_val[:val_end].to(self.device)
        self.x_test = _inputs(data.x_test, flat, self.device)
        self.y_test = data.y_test.to(self.device)

        self._orders = [torch.Generator().manual_seed(int(s)) for s in data_seeds]
        self._queues: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * self.n
        self._carry: torch.Tensor | None = None  # a batch peeked at by `probe`
        self._buffers = torch.zeros_like(self.flat)  # momentum, or Adam's first moment
        self._second = torch.zeros_like(self.flat) if optimizer == "adam" else None
        self._adam_steps = 0
        self._active = torch.ones(self.n, device=self.device)
        self._all_active = True  # lets the masks be skipped until a network is frozen
        self._keep: torch.Tensor | None = None  # per element: is its network active
        # multiplies each network's training loss (see `build`); ones: plain training
        scales = [1.0] * self.n if grad_scales is None else [float(g) for g in grad_scales]
        self.grad_scale = torch.tensor(scales, device=self.device, dtype=torch.float32)
        # multiplies each network's inputs (see `build`); None: the data as they are
        self.input_scale: torch.Tensor | None = None
        if input_scales is not None and any(float(s) != 1.0 for s in input_scales):
            shape = (self.n, 1, *[1] * (self.x_train.dim() - 1))
            self.input_scale = torch.tensor(
                [float(s) for s in input_scales], device=self.device, dtype=torch.float32
            ).view(shape)
        self._previous_mean_grad: torch.Tensor | None = None  # laid out as `flat`
        self.steps_done = 0
        # per-layer hyperparameters besides the LR, each a change to the step's direction
        # (`ganno_env.knobs.Knob.update`), applied in this order; their state lives here
        self.updates = tuple(updates)
        self._update_state: dict[str, dict] = {name: {} for name, _ in self.updates}

    @classmethod
    def build(
        cls,
        make_module,
        data: DataSplits,
        batch_size: int,
        seeds: Sequence[int],
        init_scales: Sequence[float],
        grad_scales: Sequence[float] | None = None,
        input_scales: Sequence[float] | None = None,
        **kwargs,
    ) -> PopulationTrainer:
        """Build the population from a module factory; network i depends only on seeds[i].

        `grad_scales` multiply each network's training loss, hence its gradients: for SGD the
        same as multiplying its LRs, without the LRs' values showing it (training conditions
        randomise it so that agents must read the step size from the gradients).
        `input_scales` multiply each network's inputs (train, val and test alike): for the
        first layer, the same as an init scale times it and an LR times its square, so a
        step that the LR alone would make safe can be too large."""
        modules, data_seeds = [], []
        for seed, scale in zip(seeds, init_scales):
            init_seed, data_seed = np.random.SeedSequence(int(seed)).generate_state(2)
            module = make_module()
            if not modules:  # check the first network before building the others
                check_batchable(module)
                per_network = network_bytes(
                    module, data, batch_size, kwargs.get("val_limit"), kwargs.get("optimizer")
                )
                check_memory(len(seeds), per_network, kwargs.get("device", "cpu"), "networks")
            init_parameters(module, torch.Generator().manual_seed(int(init_seed)), scale)
            modules.append(module)
            data_seeds.append(int(data_seed))
        return cls(
            modules, data, batch_size, data_seeds, grad_scales=grad_scales,
            input_scales=input_scales, **kwargs,
        )  # fmt: skip

    # ----------------------------------------------------------------- training
    def probe(self) -> tuple[torch.Tensor, LayerStats]:
        """Loss [N] and statistics of the next minibatch's gradient, without updating.

        The batch is kept and used as the first one of the next `train` call, as an
        ordinary loop would compute a gradient and then step on it.
        """
        with self._cpu_settings(), torch.no_grad():
            return self._probe()

    def _probe(self) -> tuple[torch.Tensor, LayerStats]:
        self._carry = self._take_batches(1)
        losses, grad = self._gradient(*self._batch(self._carry[0]))
        grad = self._masked(grad)
        stats = layer_statistics(
            self._by_layer(self.params), None, self._by_layer(self._views(grad)),
            self._by_layer(self._views(grad * grad)), None, 1,
        )  # fmt: skip
        return losses, stats

    def train(
        self, lrs: torch.Tensor, steps: int, knobs: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, LayerStats]:
        """Run `steps` optimiser steps with per-network, per-layer LRs `lrs` [N, L].

        `knobs` gives the [N, L] values of every other hyperparameter in `updates`, by name.
        Returns the mean train loss of each network over the interval [N] and the
        interval's per-layer statistics.
        """
        missing = sorted({name for name, _ in self.updates} - set(knobs or {}))
        if missing:
            raise ValueError(f"train() needs per-layer values of {missing} (knobs=...)")
        with self._cpu_settings(), torch.no_grad():
            return self._train(lrs, steps, knobs or {})

    def _train(
        self, lrs: torch.Tensor, steps: int, knobs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, LayerStats]:
        lrs = lrs.to(self.device, torch.float32) * self._active[:, None]
        element_lrs = self._per_element(lrs)
        element_knobs = [
            (name, update, self._per_element(knobs[name].to(self.device, torch.float32)))
            for name, update in self.updates
        ]
        batches = self._take_batches(steps)
        start = self.flat.clone()
        grad_sum = torch.zeros_like(self.flat)
        grad_sq_sum = torch.zeros_like(self.flat)
        loss_sum = torch.zeros(self.n, device=self.device)
        for t in range(steps):
            losses, grad = self._gradient(*self._batch(batches[t]))
            loss_sum += losses
            grad_sum += grad
            grad_sq_sum.addcmul_(grad, grad)
            step_lrs = element_lrs if self.step_clip is None else self._clipped(lrs, grad)
            if element_knobs:
                grad = self._knob_direction(grad, element_knobs)
            self._apply(grad, step_lrs)
        self.steps_done += steps
        self._zero_inactive()
        grad_sum = self._masked(grad_sum)
        grad_sq_sum = self._masked(grad_sq_sum)
        previous = self._previous_mean_grad
        if previous is not None:
            previous = self._by_layer(self._views(previous))
        stats = layer_statistics(
            self._by_layer(self.params), self._by_layer(self._views(start)),
            self._by_layer(self._views(grad_sum)), self._by_layer(self._views(grad_sq_sum)),
            previous, steps,
        )  # fmt: skip
        self._previous_mean_grad = grad_sum / steps
        return loss_sum / steps, stats

    def _gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss [N] of the minibatch x, y [N, B, ...] and its gradient, laid out as `flat`.

        The gradient of network i is that of its own loss times its grad scale. MLPs take
        the hand-derived backward; other modules take autograd.
        """
        if self._fast_mlp:
            return self._mlp_gradient(x, y)
        with torch.enable_grad():
            leaf = self.flat.detach().requires_grad_(True)
            losses = self._losses(self._views(leaf), x, y)
            (grad,) = torch.autograd.grad((losses * self.grad_scale).sum(), leaf)
        return losses.detach(), grad

    def _mlp_gradient(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of the MLP by hand, written into the `_grad` buffer.

        Without autograd's graph and engine a step is about thirty kernel calls, which is
        what a population of one (or a GPU) spends its time on. Activations are held as
        [N, features, B] (see `_forward`).
        """
        weights = self.params[0::2]
        grad = self._grad_views
        inputs: list[torch.Tensor] = []  # each Linear's input, kept for its weight gradient
        h = self._mlp_outputs(self.params, x, shared=False, inputs=inputs)
        scale = self.grad_scale.view(-1, 1, 1)
        if self.classification:  # the loss is the mean over examples of cross-entropy
            log_probs = h.log_softmax(1)
            labels = y.unsqueeze(1)
            losses = -log_probs.gather(1, labels).mean((1, 2))
            delta = log_probs.exp_().scatter_add_(1, labels, self._minus_ones)  # p - onehot
            delta = delta.mul_(scale / h.shape[2])
        else:  # the mean over examples and outputs of the squared error
            diff = h - y.transpose(1, 2)
            losses = diff.square().flatten(1).mean(1)
            delta = diff.mul_(scale * (2.0 / h[0].numel()))
        for j in reversed(range(len(weights))):
            torch.bmm(delta, inputs[j].transpose(1, 2), out=grad[2 * j])
            torch.sum(delta, 2, out=grad[2 * j + 1])
            if j > 0:  # back through the weights, then the ReLU (zero where it was off)
                delta = torch.bmm(weights[j].transpose(1, 2), delta)
                delta = torch.ops.aten.threshold_backward(delta, inputs[j], 0.0)
        return losses, self._grad

    @contextlib.contextmanager
    def _cpu_settings(self) -> Iterator[None]:
        """Threads and denormal flushing for the CPU (see the module docstring)."""
        if self.device.type != "cpu":
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads or threads)
        torch.set_flush_denormal(True)
        try:
            yield
        finally:
            torch.set_flush_denormal(False)
            torch.set_num_threads(threads)

    def _clipped(self, lrs: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The per-element LRs of one step under the step clip, from the plain gradient."""
        ratio = step_ratio(lrs, self._layer_sum_sq(grad), self._layer_sum_sq(self.flat))
        largest = self.largest_step_ratio
        self.largest_step_ratio = ratio if largest is None else torch.fmax(largest, ratio)
        return self._per_element(lrs * step_clip_scale(ratio, self.step_clip))

    def _layer_sum_sq(self, flat: torch.Tensor) -> torch.Tensor:
        """Each network's sum of squares per layer [N, L] of a buffer laid out as `flat`."""
        return torch.stack([sum_sq(layer) for layer in self._by_layer(self._views(flat))], 1)

    def _knob_direction(self, grad: torch.Tensor, element_knobs: list) -> torch.Tensor:
        """The step's direction after every knob's update (weight decay, momentum, ...)."""
        direction = grad
        for name, update, values in element_knobs:
            direction = update(direction, self.flat, values, self._update_state[name])
        return direction

    def _apply(self, grad: torch.Tensor, element_lrs: torch.Tensor) -> None:
        """One optimiser step for every network: SGD (with momentum) or Adam."""
        if self.optimizer == "adam":
            b1, b2 = ADAM_BETAS
            self._adam_steps += 1
            self._buffers.lerp_(grad, 1.0 - b1)
            self._second.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
            correction1 = 1.0 - b1**self._adam_steps
            correction2 = 1.0 - b2**self._adam_steps
            denom = self._second.sqrt().div_(correction2**0.5).add_(ADAM_EPS)
            step = self._buffers / denom
            self.flat.addcmul_(step, element_lrs, value=-1.0 / correction1)
        elif self.momentum > 0.0:
            self._buffers.mul_(self.momentum).add_(grad)
            self.flat.addcmul_(self._buffers, element_lrs, value=-1.0)
        else:
            self.flat.addcmul_(grad, element_lrs, value=-1.0)

    def freeze(self, networks: np.ndarray) -> None:
        """Stop training these networks (diverged): zero their weights so no NaN lingers."""
        mask = torch.as_tensor(np.asarray(networks, dtype=bool), device=self.device)
        if not bool(mask.any()):
            return
        self._active = torch.where(mask, torch.zeros_like(self._active), self._active)
        self._all_active = False
        self._keep = self._per_element(self._active[:, None].expand(-1, self.num_layers) > 0)
        with torch.no_grad():
            self._zero_inactive()
            if self._previous_mean_grad is not None:
                self._previous_mean_grad = self._masked(self._previous_mean_grad)

    def _zero_inactive(self) -> None:
        if self._all_active:
            return
        knob_state = [  # the knobs' buffers, laid out as `flat`
            t
            for state in self._update_state.values()
            for t in state.values()
            if isinstance(t, torch.Tensor) and t.shape == self.flat.shape
        ]
        for buffer in (self.flat, self._buffers, self._second, *knob_state):
            if buffer is not None:
                buffer.copy_(self._masked(buffer))

    # --------------------------------------------------------------- evaluation
    def evaluate(
        self, split: str = "val", accuracy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss [N] and accuracy [N] (None for regression) on the val or test split.

        `accuracy=False` skips the accuracy (None): the env reads only the loss of every
        interval's validation, and an argmax over ten classes costs more than the loss.
        """
        with self._cpu_settings(), torch.no_grad():
            return self._evaluate(split, accuracy)

    def _evaluate(self, split: str, accuracy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y = (self.x_val, self.y_val) if split == "val" else (self.x_test, self.y_test)
        shared = self.input_scale is None
        if not shared:  # each network sees the inputs at its own scale
            x = self.input_scale * x
        out = self._forward(self.params, x, shared=shared)
        y = y.expand(self.n, *y.shape)
        losses = self._loss_from_outputs(out, y)
        if not (self.classification and accuracy):
            return losses, None
        return losses, (out.argmax(-1) == y).float().mean(1)

    # ------------------------------------------------------------------ helpers
    def _losses(self, params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._loss_from_outputs(self._forward(params, x, shared=False), y)

    def _loss_from_outputs(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.classification:
            # classes on the middle axis: the fast layout (see `_forward`)
            return F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)
        return (out - y).square().flatten(1).mean(1)

    def _forward(self, params, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """Outputs [N, B, ...]; `shared` means x [B, ...] is the same for every network.

        The MLP computes its activations as [N, features, B] and returns a transposed view:
        on the CPU, log-softmax and cross-entropy over ten classes are about ten times
        faster along a middle axis than along the last one.
        """
        if self._fast_mlp:
            return self._mlp_outputs(params, x, shared).transpose(1, 2)
        if self._fast_cnn:
            return self._cnn_outputs(params, x, shared)
        names, template = self.names, self._template

        def one_network(network_params, inputs):
            return torch.func.functional_call(template, dict(zip(names, network_params)), inputs)

        return torch.vmap(one_network, in_dims=(0, None if shared else 0))(tuple(params), x)

    def _mlp_outputs(
        self, params, x: torch.Tensor, shared: bool, inputs: list | None = None
    ) -> torch.Tensor:
        """The MLP's outputs as [N, outputs, B]; `inputs` (if given) collects each Linear's
        input in the same layout, for the hand-derived backward."""
        h = x.transpose(-1, -2)
        last = len(params) // 2 - 1
        for j in range(last + 1):
            if inputs is not None:
                inputs.append(h)
            weight, bias = params[2 * j], params[2 * j + 1]
            if shared and j == 0:
                h = torch.matmul(weight, h) + bias.unsqueeze(2)
            else:
                h = torch.baddbmm(bias.unsqueeze(2), weight, h)
            if j < last:
                h = h.relu_()
        return h

    def _cnn_outputs(self, params, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """The CNN's outputs [N, B, outputs], its convolutions as one grouped convolution.

        Activations are held as [B, N * channels, H, W] (network-major channels): network
        i's convolution is group i, and the first layer on shared inputs is one plain
        convolution with all networks' filters. On the CPU this is about 1.2x as fast as
        the same convolutions under vmap (`benchmarks/perf_cnn.py`).
        """
        n = self.n
        by_name = dict(zip(self.names, params))
        # `networks`: how many networks' channels h holds (1: shared inputs, no conv yet)
        if shared:
            h, networks = x, 1
        else:  # [N, B, C, H, W] -> [B, N * C, H, W]
            h, networks = x.transpose(0, 1).flatten(1, 2), n
        for index, layer in self._template.named_children():
            if isinstance(layer, nn.Conv2d):
                weight, bias = by_name[f"{index}.weight"], by_name[f"{index}.bias"]
                h = F.conv2d(h, weight.flatten(0, 1), bias.flatten(), layer.stride,
                             layer.padding, layer.dilation, networks * layer.groups)  # fmt: skip
                networks = n
            elif isinstance(layer, nn.ReLU):
                h = h.relu()
            elif isinstance(layer, nn.AdaptiveAvgPool2d):
                h = F.adaptive_avg_pool2d(h, layer.output_size)
            elif isinstance(layer, nn.Flatten):  # each network's channels, then rows, columns
                if networks == 1:  # shared inputs that no convolution has split yet
                    h = h.repeat(1, n, *([1] * (h.dim() - 2)))
                h = h.reshape(h.shape[0], n, -1).transpose(0, 1)
            elif isinstance(layer, nn.Linear):  # on [N, B, features]
                weight, bias = by_name[f"{index}.weight"], by_name[f"{index}.bias"]
                h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
            else:
                raise TypeError(f"CNN layer {index!r} ({type(layer).__name__}) has no grouped form")
        return h

    def _batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets [N, B, ...] of the minibatch `indices` [N, B]."""
        rows = indices.flatten()  # index_select: a third of the cost of x[indices]
        x = self.x_train.index_select(0, rows).view(*indices.shape, *self.x_train.shape[1:])
        if self.input_scale is not None:
            x = x.mul_(self.input_scale)
        y = self.y_train.index_select(0, rows).view(*indices.shape, *self.y_train.shape[1:])
        return x, y

    def _take_batches(self, steps: int) -> torch.Tensor:
        """Minibatch indices [steps, N, B]: each network walks its own reshuffled epochs."""
        carry, self._carry = self._carry, None
        fresh = steps - (0 if carry is None else 1)
        need = fresh * self.batch_size
        size = len(self.x_train)
        rows = []
        for i in range(self.n):
            queue = self._queues[i]
            while len(queue) < need:
                queue = torch.cat([queue, torch.randperm(size, generator=self._orders[i])])
            rows.append(queue[:need])
            self._queues[i] = queue[need:]
        batches = torch.stack(rows).view(self.n, fresh, self.batch_size).transpose(0, 1)
        batches = batches.to(self.device)
        return batches if carry is None else torch.cat([carry, batches])

    def _by_layer(self, tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        layers: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]
        for tensor, j in zip(tensors, self.param_layer):
            layers[j].append(tensor)
        return layers

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The per-parameter tensors [N, *shape] of a buffer laid out as `flat`."""
        return [flat[at : at + size].view(self.n, *shape) for at, size, shape in self._blocks]

    def _per_element(self, lrs: torch.Tensor) -> torch.Tensor:
        """Per-network, per-layer values [N, L] spread over every element, laid out as `flat`."""
        return torch.cat(
            [
                lrs[:, j].view(-1, *[1] * len(shape)).expand(self.n, *shape).flatten()
                for (_, _, shape), j in zip(self._blocks, self.param_layer)
            ]
        )

    def _masked(self, flat: torch.Tensor) -> torch.Tensor:
        """A buffer laid out as `flat`, zero for every inactive network (itself if none is)."""
        if self._all_active:
            return flat
        return torch.where(self._keep, flat, 0.0)  # where, not a product: NaN x 0 is NaN

    def module(self, i: int) -> nn.Module:
        """Network i as an ordinary nn.Module (a copy of its current weights)."""
        module = copy.deepcopy(self._template)
        with torch.no_grad():
            for name, p in zip(self.names, self.params):
                module.get_parameter(name).copy_(p[i])
        return module


def _inputs(x: torch.Tensor, flat: bool, device: torch.device) -> torch.Tensor:
    x = x.to(device, torch.float32)
    return x.reshape(len(x), -1) if flat else x


def check_batchable(module: nn.Module) -> None:
    """ValueError naming a layer that the population cannot train under `torch.vmap`.

    Running statistics (BatchNorm, or InstanceNorm with `track_running_stats=True`) are
    buffers updated in place, which vmap cannot do for a batch of networks sharing one
    buffer; random layers (Dropout, RReLU) draw random numbers, which vmap refuses. Both
    would otherwise fail deep inside the first training step.
    """
    for name, sub in module.named_modules():
        kind = type(sub).__name__
        if isinstance(sub, nn.modules.batchnorm._NormBase) and sub.track_running_stats:
            raise ValueError(
                f"model {type(module).__name__}: layer {name!r} ({kind}) keeps running "
                "statistics, which it updates in place in every forward; the engine trains "
                "the population under torch.vmap, which cannot update one buffer for many "
                f"networks. Allowed: {kind}(..., track_running_stats=False), LayerNorm or "
                "GroupNorm"
            )
        if isinstance(sub, (nn.modules.dropout._DropoutNd, nn.RReLU)):
            raise ValueError(
                f"model {type(module).__name__}: layer {name!r} ({kind}) draws random "
                "numbers in every forward; the engine trains the population under "
                "torch.vmap, which refuses random operations. Allowed: models without random "
                "layers (remove it)"
            )


def network_bytes(
    module: nn.Module,
    data: DataSplits,
    batch_size: int,
    val_limit: int | None = None,
    optimizer: str | None = "sgd",
) -> int:
    """Estimated memory of one network of a population while it trains, in bytes.

    Counts float32 parameters with what the engine keeps per parameter (the stacked copy,
    the module it came from, gradient, interval sums, start weights, last mean gradient,
    optimiser buffers), the activations of one training batch (kept for the backward) and
    of the largest evaluation split, and the minibatch order. Measured with one forward of
    two examples, so it knows any model's activations.
    """
    params = sum(p.numel() for p in module.parameters())
    copies = 9 if optimizer == "adam" else 8
    outputs: list[int] = []

    examples = data.x_train[:2].float()

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel() // max(len(examples), 1))

    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            module(examples)
    finally:
        for hook in hooks:
            hook.remove()
    per_example = sum(outputs)
    largest = max(outputs, default=0)
    val_rows = len(data.x_val) if val_limit is None else min(val_limit, len(data.x_val))
    eval_rows = max(val_rows, len(data.x_test))
    elements = copies * params + 2 * batch_size * per_example + 2 * eval_rows * largest
    return 4 * elements + 16 * len(data.x_train)


def available_memory(device: str | torch.device) -> int | None:
    """Bytes free for new allocations on `device`; None when this system does not say."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:  # Linux: free memory plus what the kernel can reclaim (caches)
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(population: int, per_network: int, device: str | torch.device, what: str) -> None:
    """ValueError when `population` x `per_network` bytes exceed the device's free memory.

    Refuses an impossible population before anything is allocated, instead of hanging in
    swap or dying in the allocator.
    """
    free = available_memory(device)
    if free is None or population * per_network <= free:
        return
    raise ValueError(
        f"population={population}: the {what} need about {_size(population * per_network)} "
        f"({_size(per_network)} per network), but {torch.device(device)} has "
        f"{_size(free)} free; allowed here: population <= {free // max(per_network, 1)}"
    )


def _size(count: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    k = 0
    while count >= 1024 and k < len(units) - 1:
        count, k = count / 1024, k + 1
    return f"{count:.1f} {units[k]}"
