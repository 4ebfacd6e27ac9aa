"""GANNO: neural-network training as a multi-agent environment.

Each layer of a training network is an agent that sets its own learning rate. Import the
env as `from ganno_env import layerwise_lr_v0`, or make it through PettingZoo's registry:
`pettingzoo.make("parallel", "ganno/layerwise_lr-v0")`. Ray is not needed here.
"""

from pettingzoo import register as _register

from ganno_env import layerwise_lr_v0
from ganno_env.conditions import (
    CONDITIONS_VERSION,
    Condition,
    InitialConditions,
    get_condition,
    load_conditions,
)
from ganno_env.datasets import DataSplits, load_dataset
from ganno_env.features import FEATURE_NAMES, FEATURES
from ganno_env.policy import load_policy
from ganno_env.scheduler import GannoScheduler
from ganno_env.tasks import TASKS, Task, get_task, register_task

__all__ = [
    "CONDITIONS_VERSION",
    "FEATURES",
    "FEATURE_NAMES",
    "TASKS",
    "Condition",
    "DataSplits",
    "GannoScheduler",
    "InitialConditions",
    "Task",
    "get_condition",
    "get_task",
    "layerwise_lr_v0",
    "load_conditions",
    "load_dataset",
    "load_policy",
    "register_task",
]

_ENTRY = "ganno_env.layerwise_lr_v0"
_register("parallel", "ganno/layerwise_lr-v0", entry_point=f"{_ENTRY}:parallel_env")
_register("aec", "ganno/layerwise_lr-v0", entry_point=f"{_ENTRY}:env")
for _name in list(TASKS):
    _register("parallel", f"ganno/{_name}-v0", f"{_ENTRY}:parallel_env", kwargs={"task": _name})
    _register("aec", f"ganno/{_name}-v0", f"{_ENTRY}:env", kwargs={"task": _name})
