"""GANNO: neural-network training as a multi-agent environment.

Each layer of a training network is an agent that sets its own learning rate. Import the
env as `from ganno_env import layerwise_lr_v1`, or make it through PettingZoo's registry:
`pettingzoo.make("parallel", "ganno/layerwise_lr-v1")`. Ray is not needed here. The
previous version, `layerwise_lr_v0` (ids `ganno/...-v0`), stays available for the policies
trained on it. `layerwise_lr_v2` (ids `ganno/...-v2`) lets agents set more than the LR
(`controls`, `ganno_env.knobs`): by default the LR and momentum.
"""

from pettingzoo import register as _register

from ganno_env import layerwise_lr_v0, layerwise_lr_v1, layerwise_lr_v2
from ganno_env.conditions import (
    CONDITIONS_VERSION,
    Condition,
    InitialConditions,
    get_condition,
    load_conditions,
)
from ganno_env.datasets import DataSplits, load_dataset
from ganno_env.features import FEATURE_NAMES, FEATURE_SETS, FEATURES, FEATURES_VERSION
from ganno_env.observation_clip import add_observation_clip
from ganno_env.policy import add_fallback, add_step_clip, load_policy
from ganno_env.scheduler import GannoScheduler
from ganno_env.tasks import TASKS, Task, get_task, register_task

__all__ = [
    "CONDITIONS_VERSION",
    "FEATURES",
    "FEATURE_NAMES",
    "FEATURE_SETS",
    "FEATURES_VERSION",
    "TASKS",
    "Condition",
    "DataSplits",
    "GannoScheduler",
    "InitialConditions",
    "Task",
    "add_fallback",
    "add_observation_clip",
    "add_step_clip",
    "get_condition",
    "get_task",
    "layerwise_lr_v0",
    "layerwise_lr_v1",
    "layerwise_lr_v2",
    "load_conditions",
    "load_dataset",
    "load_policy",
    "register_task",
]

# One id per env version and task; -v0 keeps the v0 env (features v1) for its policies, and
# -v2 is the env whose agents set the LR and momentum.
for _version in (0, 1, 2):
    _entry = f"ganno_env.layerwise_lr_v{_version}"
    _register("parallel", f"ganno/layerwise_lr-v{_version}", f"{_entry}:parallel_env")
    _register("aec", f"ganno/layerwise_lr-v{_version}", f"{_entry}:env")
    for _name in list(TASKS):
        _id = f"ganno/{_name}-v{_version}"
        _register("parallel", _id, f"{_entry}:parallel_env", kwargs={"task": _name})
        _register("aec", _id, f"{_entry}:env", kwargs={"task": _name})
