"""The env as a BenchMARL task (`pip install 'ganno[benchmarl]'`; see docs/benchmarl.md).

Importable only where BenchMARL is installed. BenchMARL 1.5 pins `torchrl<0.12`, so it lives
in its own environment, not beside the `torchrl` extra (TorchRL 0.14).

    from ganno_env.integrations.benchmarl import GannoTask

    task = GannoTask.LAYERWISE_LR.get_task(config={"max_cycles": 40, "interval": 25})

`config` holds `layerwise_lr_v1.parallel_env` arguments (none are needed). The task builds
its env with `ganno_env.integrations.torchrl.make_torchrl_env`: one group `"agents"` for
all layers (so BenchMARL's shared-parameter policies serve every layer), the global state
for centralised critics (MAPPO, QMIX, ...), `action_mode="continuous"` when BenchMARL asks
for continuous actions. BenchMARL's algorithms read no agent mask, so conditions whose
depth varies (`"deeper"`) raise ValueError; with population > 1 a diverging network ends
the whole population's episode. `log_info` adds the mean test loss and accuracy of the
networks whose episode ended in the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from ganno_env.integrations._common import require

require("benchmarl", "benchmarl", "ganno_env.integrations.benchmarl")

import torch  # noqa: E402
from benchmarl.environments.common import Task  # noqa: E402
from benchmarl.environments.pettingzoo.common import PettingZooClass  # noqa: E402
from tensordict import TensorDictBase  # noqa: E402
from torchrl.envs import EnvBase  # noqa: E402

from ganno_env import layerwise_lr_v1  # noqa: E402
from ganno_env.config import EnvConfig  # noqa: E402
from ganno_env.integrations._common import varying_agents  # noqa: E402
from ganno_env.integrations.torchrl import GROUP, make_torchrl_env  # noqa: E402


class GannoClass(PettingZooClass):
    """BenchMARL's view of the env: `config` holds the env's arguments."""

    def get_env_fun(
        self,
        num_envs: int,
        continuous_actions: bool,
        seed: int | None,
        device: Any,
    ) -> Callable[[], EnvBase]:
        config = copy.deepcopy(self.config)
        if continuous_actions:
            config["action_mode"] = "continuous"
        reason = varying_agents(layerwise_lr_v1.parallel_env(**config))
        if reason is not None:
            raise ValueError(
                f"BenchMARL's algorithms read no agent mask, but {reason}: allowed: conditions "
                "of one depth with max_layers at its default; for varying depth use "
                "ganno_env.integrations.torchrl (use_mask) or RLlib"
            )
        return lambda: make_torchrl_env(
            seed=seed, done_on_any=True, wrapper_kwargs={"device": device}, **config
        )

    def supports_continuous_actions(self) -> bool:
        return True

    def supports_discrete_actions(self) -> bool:
        return True

    def has_state(self) -> bool:
        return True

    def has_render(self, env: EnvBase) -> bool:
        return False

    def max_steps(self, env: EnvBase) -> int:
        return int(self.config.get("max_cycles", EnvConfig.max_cycles))

    @staticmethod
    def log_info(batch: TensorDictBase) -> dict[str, float]:
        """Mean test loss and accuracy of the networks whose episode ended in the batch."""
        out = {}
        for key in ("test_loss", "test_accuracy"):
            values = batch.get(("next", GROUP, "info", key), None)
            if values is None:
                continue
            measured = values[~torch.isnan(values)]
            if measured.numel():
                out[f"ganno/{key}"] = float(measured.mean())
        return out

    @staticmethod
    def env_name() -> str:
        return "ganno"


class GannoTask(Task):
    """GANNO's tasks for BenchMARL; `get_task(config)` takes env arguments."""

    LAYERWISE_LR = None

    @staticmethod
    def associated_class():
        return GannoClass

    def get_task(self, config: dict[str, Any] | None = None) -> GannoClass:
        """The task with these env arguments (the env's defaults where None)."""
        return GannoClass(name=self.name, config=dict(config or {}))

    def get_from_yaml(self, path: str | None = None) -> GannoClass:
        """With a path, env arguments from that YAML file; else the env's defaults."""
        if path is None:
            return self.get_task()
        from benchmarl.utils import _read_yaml_config

        return self.get_task(config=_read_yaml_config(path))
