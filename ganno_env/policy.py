"""A trained GANNO policy as a plain torch file, and the controller that runs it.

The RLlib module trained by `rllib_configs` wraps `PolicyNet`; `export` writes its weights
and everything needed to use them (env version, observation features, actions, mapping) to
`policy.pt`, which `torch.load(weights_only=True)` reads. `load_policy` returns a
controller that acts without Ray, through the same env API as the hand-made schedules.

A policy reads the observation features of the env version it was trained on, so a file
records both (`env_version`, `features_version`) and keeps working after the env moves on:
`load_policy` accepts every version in `ENV_VERSIONS` (a `layerwise_lr_v0` policy reads
features v1), the controller requires that features version of its env
(`env_requirements`), and `make_env` and `GannoScheduler` compute it.

The name `"pretrained"` (a `str`, wherever a policy file is accepted) means the policy
shipped inside the package, `ganno_env/data/pretrained_policy.pt`; a `Path` is always a
path, so a local file called `pretrained` is `Path("pretrained")` or `"./pretrained"`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganno_env.conditions import is_finite_number
from ganno_env.config import ACTION_MODES, ENV_DEFAULTS
from ganno_env.controllers import Controller
from ganno_env.decision import box_action_ranges, check_fallback_factors
from ganno_env.features import FEATURE_SETS, FEATURES_VERSION
from ganno_env.knobs import Control, control_settings, make_controls, observation_names
from ganno_env.layerwise_lr import ENV_VERSION, ENV_VERSIONS, env_version

POLICY_FORMAT = 1
MAPPINGS = ("shared", "grouped", "per_layer")
_AGENT = re.compile(r"^(?:net(\d+)_layer|layer_)(\d+)$")
PRETRAINED = "pretrained"  # the name of the shipped policy
# Next to the package's other data files, so an installed wheel carries it (package-data).
PRETRAINED_PATH = Path(__file__).resolve().parent / "data" / "pretrained_policy.pt"


class PolicyNet(nn.Module):
    """Actor and critic MLPs over one agent's observation.

    The actor outputs logits (discrete actions: one block per knob, RLlib's multi-categorical
    layout when there are several) or means and log-stds (a Box(K,) action, the layout of
    RLlib's diagonal Gaussian); the critic outputs a value.
    """

    def __init__(self, obs_size: int, out_size: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.obs_size, self.out_size, self.hidden = obs_size, out_size, tuple(hidden)
        self.pi = mlp(obs_size, hidden, out_size)
        self.vf = mlp(obs_size, hidden, 1)
        with torch.no_grad():  # small last layers: near-uniform first policy, values near 0
            self.pi[-1].weight.mul_(0.01)
            self.vf[-1].weight.mul_(0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.pi(obs)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.vf(obs).squeeze(-1)


def mlp(size: int, hidden: Sequence[int], out: int) -> nn.Sequential:
    """Linear layers of the `hidden` widths with tanh between them, then a linear output."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(size, width), nn.Tanh()]
        size = width
    layers.append(nn.Linear(size, out))
    return nn.Sequential(*layers)


def parse_agent(agent_id: str) -> tuple[int, int]:
    """(network, layer) of an agent id such as `layer_2` or `net3_layer2`."""
    match = _AGENT.match(agent_id)
    if match is None:
        raise ValueError(f"agent id {agent_id!r}; allowed: 'layer_J' or 'netI_layerJ'")
    return int(match.group(1) or 0), int(match.group(2))


def module_for(agent_id: str, mapping: str, num_layers: int | None = None) -> str:
    """The policy module that acts for an agent under a mapping.

    `shared`: one module for every layer. `grouped`: `first`, `hidden` and `last` (the last
    layer needs the network's depth; unknown depth maps to `hidden`). `per_layer`: `layer_J`.
    """
    if mapping == "shared":  # one module for every agent, whatever its id names
        return "shared"
    _, layer = parse_agent(agent_id)
    if mapping == "per_layer":
        return f"layer_{layer}"
    if mapping == "grouped":
        if layer == 0:
            return "first"
        if num_layers is not None and layer == num_layers - 1:
            return "last"
        return "hidden"
    raise ValueError(f"mapping={mapping!r}; allowed: {MAPPINGS}")


def module_ids(mapping: str, max_layers: int) -> list[str]:
    """Every module a mapping can use for networks of up to `max_layers` layers."""
    if mapping == "shared":
        return ["shared"]
    if mapping == "grouped":
        return ["first", "hidden", "last"]
    if mapping == "per_layer":
        return [f"layer_{j}" for j in range(max_layers)]
    raise ValueError(f"mapping={mapping!r}; allowed: {MAPPINGS}")


def export_policy(
    path: str | os.PathLike,
    nets: Mapping[str, PolicyNet],
    mapping: str,
    env_config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write `policy.pt`: weights of every module plus what a user needs to run them.

    The env and features versions are those of `env_config` (its `features_version`,
    default the current one, and its `controls`), so the file names the observations its
    weights read. A policy that sets knobs besides the LR also records them (`controls`)
    and their factors and bounds (`knobs`), one trained under the safety net its ceiling
    (`max_step_ratio`), one trained with the fallback its threshold (`fallback_step_ratio`),
    and one trained without raises at the probe `probe_cuts_only`.
    """
    first = next(iter(nets.values()))
    features_version = env_config.get("features_version", FEATURES_VERSION)
    controls = tuple(env_config.get("controls", ENV_DEFAULTS["controls"]))
    names = observation_names(features_version, controls)
    if first.obs_size != len(names):
        raise ValueError(
            f"the policy reads {first.obs_size} numbers per agent, but features "
            f"v{features_version} (env_config['features_version']) with controls {controls} "
            f"are {len(names)}: export with the env_config the policy was trained with"
        )
    lr_factors = env_config.get("lr_factors", ENV_DEFAULTS["lr_factors"])
    lr_bounds = env_config.get("lr_bounds", ENV_DEFAULTS["lr_bounds"])
    payload = {
        "format": POLICY_FORMAT,
        "env_version": env_version(features_version, controls),
        "features_version": int(features_version),
        "feature_names": list(names),
        "mapping": mapping,
        "action_mode": env_config.get("action_mode", ENV_DEFAULTS["action_mode"]),
        "lr_factors": [float(f) for f in lr_factors],
        "lr_bounds": [float(b) for b in lr_bounds],
        "obs_size": first.obs_size,
        "out_size": first.out_size,
        "hidden": list(first.hidden),
        "modules": {
            name: {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            for name, net in nets.items()
        },
        "extra": dict(extra or {}),
    }
    if len(controls) > 1:  # LR-only files stay as they were
        payload["controls"] = list(controls)
        payload["knobs"] = control_settings(make_controls(controls, lr_factors, lr_bounds))
    if env_config.get("max_step_ratio") is not None:  # files without the safety net as before
        payload["max_step_ratio"] = float(env_config["max_step_ratio"])
    if env_config.get("fallback_step_ratio") is not None:
        payload["fallback_step_ratio"] = float(env_config["fallback_step_ratio"])
    if env_config.get("probe_cuts_only"):
        payload["probe_cuts_only"] = True
    if env_config.get("step_clip") is not None:
        payload["step_clip"] = float(env_config["step_clip"])
    torch.save(payload, path)


# The largest step ratio that `train_wide` shows at the probe (`python -m benchmarks.step_ratios`):
# beyond it a policy's actions extrapolate. `add_fallback` and `ganno run` default to it.
FALLBACK_STEP_RATIO = 0.33


def add_fallback(
    path: str | os.PathLike, out: str | os.PathLike, step_ratio: float = FALLBACK_STEP_RATIO
) -> Path:
    """Write a copy of a policy file that runs under the fallback (`fallback_step_ratio`).

    For a policy trained without it: the benchmark, `make_env` and `GannoScheduler` then
    cut every layer of a network whose step leaves the training support, where the policy
    would extrapolate (docs/results.md, "The fallback at run time only": it changed nothing
    but the runs at LR 3 and beyond). The default is `FALLBACK_STEP_RATIO`. The copy
    records `extra["fallback_added"]`, so its results say that the fallback came after
    training. ValueError for a ratio that is not a finite number > 0, a policy trained with
    another fallback, or one whose LR factors have none below 1.
    """
    if not (is_finite_number(step_ratio) and step_ratio > 0):
        raise ValueError(f"step_ratio={step_ratio!r}; allowed: a finite number > 0")
    return _copy_with_rule(
        path, out, "fallback_step_ratio", step_ratio, "fallback_added",
        check=lambda payload: check_fallback_factors(step_ratio, payload["lr_factors"]),
    )  # fmt: skip


# Just under the per-step step ratio (0.55) that 99% of `train_wide`'s networks that survive
# a constant LR stay within (`python -m benchmarks.step_ratios --every-step`; docs/results.md,
# "A clip on every step"): `add_step_clip`'s default.
STEP_CLIP = 0.5


def add_step_clip(
    path: str | os.PathLike, out: str | os.PathLike, step_clip: float = STEP_CLIP
) -> Path:
    """Write a copy of a policy file that runs under the step clip (`step_clip`).

    The benchmark, `make_env` and `GannoScheduler` then scale down every optimiser step
    that would change a layer's weights by more than `step_clip` (its plain SGD step; see
    `ganno_env.decision.step_clip_scale`); the policy's LRs stay as it sets them. The copy
    records `extra["step_clip_added"]`. ValueError for a clip that is not a finite number
    > 0, or a policy trained under another clip.
    """
    if not (is_finite_number(step_clip) and step_clip > 0):
        raise ValueError(f"step_clip={step_clip!r}; allowed: a finite number > 0")
    return _copy_with_rule(path, out, "step_clip", step_clip, "step_clip_added")


def _copy_with_rule(
    path: str | os.PathLike,
    out: str | os.PathLike,
    key: str,
    value: float,
    added: str,
    check: Callable[[Mapping[str, Any]], None] | None = None,
) -> Path:
    """Write a copy of a policy file whose payload runs under `key` = `value`, a run-time
    rule added after training; `extra[added]` records that it came after training. A policy
    trained with the rule at another value is a ValueError; `check(payload)` may refuse
    others before anything is written."""
    payload = dict(load_policy(path).payload)  # a file it can serve, or a clear error
    trained = payload.get(key)
    if trained is not None and float(trained) != float(value):
        raise ValueError(f"the policy was trained with {key}={trained!r}; allowed: that value")
    if check is not None:
        check(payload)
    payload[key] = float(value)
    if trained is None:
        payload["extra"] = {**payload.get("extra", {}), added: float(value)}
    torch.save(payload, out)
    return Path(out)


def observation_clip_bounds(payload: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The (low, high) arrays that the policy holds its observations in before it acts, from
    its `observation_clip` ({feature name: [low, high]}; `add_observation_clip`); None when
    it has none. ValueError for a name it does not read or a range that is not
    low <= high, both finite."""
    clip = payload.get("observation_clip")
    if clip is None:
        return None
    names = list(payload["feature_names"])
    if not isinstance(clip, Mapping) or not clip:
        raise ValueError(
            f"policy observation_clip={clip!r}; allowed: a non-empty dict "
            "{feature name: [low, high]}"
        )
    low = np.full(len(names), -np.inf, dtype=np.float32)
    high = np.full(len(names), np.inf, dtype=np.float32)
    for name, bounds in clip.items():
        if name not in names:
            raise ValueError(
                f"policy observation_clip names {name!r}; allowed: the features it reads {names}"
            )
        ok = isinstance(bounds, Sequence) and len(bounds) == 2
        if not (ok and all(is_finite_number(b) for b in bounds) and bounds[0] <= bounds[1]):
            raise ValueError(
                f"policy observation_clip[{name!r}]={bounds!r}; allowed: [low, high], both "
                "finite numbers, low <= high"
            )
        low[names.index(name)], high[names.index(name)] = bounds
    return low, high


def policy_controls(payload: Mapping[str, Any]) -> tuple[Control, ...]:
    """The knobs a policy sets, with its factors and bounds (files without `controls`: the
    LR alone)."""
    return make_controls(
        tuple(payload.get("controls", ("lr",))),
        payload["lr_factors"],
        payload["lr_bounds"],
        payload.get("knobs"),
    )


class PolicyController(Controller):
    """Runs an exported policy: greedy (or sampled) actions for every live agent."""

    name = "ganno"

    def __init__(self, payload: dict[str, Any], greedy: bool = True, seed: int = 0):
        check_policy_actions(payload)
        self.features_version = check_policy_versions(payload)
        self.env_version = payload["env_version"]
        self.payload = payload
        self.mapping = payload["mapping"]
        self.action_mode = payload["action_mode"]
        self.controls = policy_controls(payload)
        self._sizes = [len(c.factors) for c in self.controls]  # discrete: logits per knob
        if self.action_mode != "discrete":  # a Box policy clips its numbers to these
            self._box = box_action_ranges(self.action_mode, self.controls)
        self._clip = observation_clip_bounds(payload)  # (low, high) per feature, or None
        self.greedy = greedy
        self.rng = torch.Generator().manual_seed(seed)
        self.nets: dict[str, PolicyNet] = {}
        for name, state in payload["modules"].items():
            net = PolicyNet(payload["obs_size"], payload["out_size"], payload["hidden"])
            net.load_state_dict(state)
            net.eval()
            self.nets[name] = net

    def env_requirements(self) -> dict[str, Any]:
        """The action mode, LR factors and LR bounds the policy was trained with, the
        observation features it reads (its env version's) and, for a policy that sets more
        than the LR, its `controls`."""
        needed = {
            "action_mode": self.action_mode,
            "lr_factors": tuple(float(f) for f in self.payload["lr_factors"]),
            "lr_bounds": tuple(float(b) for b in self.payload["lr_bounds"]),
            "features_version": self.features_version,
            # the safety net's ceiling changes which LR an action ends at (None: off)
            "max_step_ratio": self.payload.get("max_step_ratio"),
            "probe_cuts_only": bool(self.payload.get("probe_cuts_only", False)),
            "fallback_step_ratio": self.payload.get("fallback_step_ratio"),
            "step_clip": self.payload.get("step_clip"),
        }
        if len(self.controls) > 1:
            needed["controls"] = tuple(c.name for c in self.controls)
        return needed

    def env_defaults(self) -> dict[str, Any]:
        """The pace it was trained at (`interval`, `max_cycles`) where its file records it."""
        recorded = {key: recorded_setting(self.payload, key) for key in ("interval", "max_cycles")}
        return {key: value for key, value in recorded.items() if value is not None}

    def choose(self, observations: dict, infos: dict) -> dict:
        return self.actions(observations)

    @torch.no_grad()
    def actions(self, observations: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Actions for a dict of per-agent observations, one forward per module."""
        depth = _depths(observations)
        groups: dict[str, list[str]] = {}
        for agent in observations:
            network, _ = parse_agent(agent)
            groups.setdefault(module_for(agent, self.mapping, depth.get(network)), []).append(agent)
        actions: dict[str, Any] = {}
        for module, agents in groups.items():
            if module not in self.nets:
                raise ValueError(
                    f"agent {agents[0]!r} needs policy module {module!r}, which the policy "
                    f"does not have (it has {sorted(self.nets)}): a per_layer policy serves "
                    "only networks as deep as it was trained on"
                )
            obs = np.stack([observations[a] for a in agents])
            if self._clip is not None:
                obs = np.clip(obs, *self._clip)
            out = self.nets[module](torch.as_tensor(obs, dtype=torch.float32))
            for agent, row in zip(agents, out):
                actions[agent] = self._action(row)
        return actions

    def _action(self, out: torch.Tensor) -> Any:
        if self.action_mode == "discrete":
            picks = [self._pick(logits) for logits in torch.split(out, self._sizes)]
            return picks[0] if len(picks) == 1 else np.array(picks, dtype=np.int64)
        k = len(self.controls)
        mean, log_std = out[:k], out[k:]
        value = mean if self.greedy else mean + log_std.exp() * torch.randn(k, generator=self.rng)
        low, high = self._box
        return np.clip(value.numpy(), low, high).astype(np.float32)

    def _pick(self, logits: torch.Tensor) -> int:
        if self.greedy:
            return int(logits.argmax())
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=self.rng))


class GlobalPolicyController(PolicyController):
    """Ablation "GANNO-global": the same trained policy, one action per network.

    Each layer's action is computed as usual, then every layer of a network gets the
    action nearest (in log-factor) to the mean of its layers' log-factors. Comparing it with
    the per-layer controller shows what per-layer control adds.
    """

    name = "ganno_global"

    @torch.no_grad()
    def actions(self, observations: Mapping[str, np.ndarray]) -> dict[str, Any]:
        per_layer = super().actions(observations)
        by_network: dict[int, list[str]] = {}
        for agent in per_layer:
            by_network.setdefault(parse_agent(agent)[0], []).append(agent)
        tied: dict[str, Any] = {}
        for agents in by_network.values():
            if self.action_mode == "discrete":
                chosen = np.array([np.atleast_1d(per_layer[a]) for a in agents])  # [agents, K]
                picks = []
                for k, control in enumerate(self.controls):
                    factors = np.log(np.asarray(control.factors, dtype=np.float64))
                    mean = np.mean(factors[chosen[:, k]])
                    picks.append(int(np.argmin(np.abs(factors - mean))))
                action: Any = picks[0] if len(picks) == 1 else np.array(picks, dtype=np.int64)
            else:
                action = np.mean([per_layer[a] for a in agents], axis=0).astype(np.float32)
            for agent in agents:
                tied[agent] = action
        return tied


def check_policy_actions(payload: Mapping[str, Any]) -> None:
    """ValueError when a policy's outputs cannot be actions of its own action mode.

    A discrete policy needs one output per factor of each knob, a Box policy a mean and a
    log-std per knob; otherwise it would pick factors that do not exist or read its outputs
    wrongly.
    """
    mode, factors, out = payload["action_mode"], payload["lr_factors"], payload["out_size"]
    if mode not in ACTION_MODES:
        raise ValueError(f"policy action_mode={mode!r}; allowed: {ACTION_MODES}")
    controls = policy_controls(payload)
    if mode == "discrete":
        needed = sum(len(c.factors) for c in controls)
    else:
        needed = 2 * len(controls)
    if out != needed:
        what = f"{len(factors)} lr_factors {tuple(factors)}" if mode == "discrete" else "a Box"
        if len(controls) > 1:
            what += f" and knobs {[c.name for c in controls]}"
        raise ValueError(
            f"policy has out_size={out} outputs, but its action_mode={mode!r} with {what} "
            f"needs {needed}"
        )


def check_policy_versions(payload: Mapping[str, Any]) -> int:
    """The features version a policy reads; ValueError for versions this package cannot serve.

    The env version must be one of `ENV_VERSIONS`, and the features (version and names) those
    that env computes for the policy's knobs: a policy fed other features would act on
    numbers it never saw.
    """
    trained_on = payload.get("env_version")
    if trained_on not in ENV_VERSIONS:
        raise ValueError(
            f"policy was trained on env {trained_on!r}; this ganno_env serves "
            f"{sorted(ENV_VERSIONS)} (current: {ENV_VERSION!r})"
        )
    expected = ENV_VERSIONS[trained_on]
    controls = tuple(payload.get("controls", ("lr",)))
    try:
        computed = list(observation_names(expected, controls))
        knobs_version = env_version(expected, controls)
    except ValueError as error:
        raise ValueError(f"policy controls {list(controls)}: {error}") from None
    if knobs_version != trained_on:
        raise ValueError(
            f"policy was trained on env {trained_on!r} with controls {list(controls)}, which "
            f"env {knobs_version!r} serves: a damaged or hand-edited file"
        )
    version, names = payload.get("features_version"), payload.get("feature_names")
    if version != expected or list(names or []) != computed:
        raise ValueError(
            f"policy expects observation features v{version} {names}, but its env "
            f"{trained_on!r} computes v{expected} {computed} (versions "
            f"served: {sorted(FEATURE_SETS)})"
        )
    return expected


def recorded_setting(payload: Mapping[str, Any], key: str) -> Any:
    """An env setting the policy's file records (`extra`, or `extra["env_config"]`); None if
    it does not."""
    extra = payload.get("extra")
    extra = extra if isinstance(extra, dict) else {}
    for source in (extra, extra.get("env_config")):
        if isinstance(source, dict) and source.get(key) is not None:
            return source[key]
    return None


def policy_sha256(payload: Mapping[str, Any]) -> str:
    """sha256 (hex) of a policy's content: its payload, key by key, tensors by their bytes.

    The same for the file, `"pretrained"` and a controller loaded from either (unlike the
    file's bytes, which depend on how it was written), so a scheduler state can say which
    policy made its decisions.
    """
    digest = hashlib.sha256()
    _hash_value(digest, payload)
    return digest.hexdigest()


def _hash_value(digest: Any, value: Any) -> None:
    if isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=repr):
            _hash_value(digest, key)
            _hash_value(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _hash_value(digest, item)
        digest.update(b"]")
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {tensor.dtype} {tuple(value.shape)}:".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def _depths(observations: Mapping[str, Any]) -> dict[int, int]:
    """Layers per network, from the agent ids present."""
    depth: dict[int, int] = {}
    for agent in observations:
        network, layer = parse_agent(agent)
        depth[network] = max(depth.get(network, 0), layer + 1)
    return depth


def resolve_policy_path(name_or_path: str | os.PathLike) -> Path:
    """The file a policy argument names: the shipped file for `"pretrained"`, else the path.

    Callers that key results on the file (the benchmark hashes its bytes) resolve first, so
    `"pretrained"` is named by the shipped file's content, not by the word. Raises
    FileNotFoundError when the shipped file is absent (an install without package data);
    other paths are returned unchecked, as the caller's open reports them best.
    """
    if isinstance(name_or_path, str) and name_or_path == PRETRAINED:
        if not PRETRAINED_PATH.is_file():
            raise FileNotFoundError(
                f"the pretrained GANNO policy is not installed: {PRETRAINED_PATH} is missing "
                "(reinstall ganno with its package data, or pass the path of a policy.pt)"
            )
        return PRETRAINED_PATH
    return Path(name_or_path)


def load_policy(
    path: str | os.PathLike, greedy: bool = True, seed: int = 0, tie_layers: bool = False
) -> PolicyController:
    """A controller from `policy.pt`, or from `"pretrained"` (the policy shipped in the
    package), no Ray needed. Clear errors for files it can't serve.

    `tie_layers=True` gives the GANNO-global ablation (one action per network).
    """
    path = resolve_policy_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # unpickling refused or a corrupt file
        raise ValueError(f"{os.fspath(path)!r} is not a GANNO policy file: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{os.fspath(path)!r}: policy format {found!r}; allowed: {POLICY_FORMAT}")
    try:
        check_policy_versions(payload)
    except ValueError as error:
        raise ValueError(f"{os.fspath(path)!r}: {error}") from None
    if payload.get("mapping") not in MAPPINGS:
        raise ValueError(
            f"{os.fspath(path)!r}: mapping {payload.get('mapping')!r}; allowed: {MAPPINGS}"
        )
    try:
        cls = GlobalPolicyController if tie_layers else PolicyController
        return cls(payload, greedy=greedy, seed=seed)
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{os.fspath(path)!r}: damaged policy weights ({error})") from None
