"""effkit: composable efficiency transforms for transformer encoders.

The Python API mirrors the recipe format::

    from effkit import load_model, stack, fit
    model = load_model("builtin:minilm-l6", task="sequence-classification", num_labels=5)
    model = stack(model, [KeepLayers(layers=[0, 2, 4])])
    result = run("recipes/quickstart.yaml")         # or run(Recipe(...)) from Python
    result.metrics["test"]["accuracy"], model.predict(["some text"])
    front = search("recipes/pareto_search.yaml", trials=12).front  # throughput vs accuracy
"""

import importlib
from typing import TYPE_CHECKING

from effkit.auto import register as _register_auto_classes
from effkit.errors import (
    DataError,
    EffkitError,
    ModelError,
    PluginError,
    RecipeError,
    RunError,
)
from effkit.hardware import native_half
from effkit.models import EffkitModel, ModelConfig, load, load_model, save
from effkit.objectives import Objective, TaskObjective, task_loss
from effkit.registry import register
from effkit.regression import in_head_units
from effkit.task import Task
from effkit.transform import (
    SPARSITY,
    ExportGraph,
    FollowsHiddenPruning,
    LocalPath,
    ModelFacts,
    StageContext,
    StageRef,
    Transform,
)

_register_auto_classes()  # AutoModelFor...from_pretrained(FOLDER) and pipeline() read them

__all__ = [
    "SPARSITY",
    "Collator",
    "DataError",
    "EffkitError",
    "EffkitModel",
    "ExportGraph",
    "FollowsHiddenPruning",
    "LocalPath",
    "ModelConfig",
    "ModelError",
    "ModelFacts",
    "Objective",
    "PluginError",
    "RecipeError",
    "RunError",
    "StageContext",
    "StageRef",
    "Task",
    "TaskObjective",
    "Transform",
    "encode",
    "encode_texts",
    "fit",
    "in_head_units",
    "load",
    "load_model",
    "load_recipe",
    "native_half",
    "predict",
    "preflight",
    "read_text_file",
    "register",
    "run",
    "save",
    "search",
    "stack",
    "task_loss",
]


# The recipe runner pulls in accelerate and datasets, and the data layer the tokenizers: import
# them on first use only (a plugin's import of effkit stays cheap).
_LAZY = {
    "run": "effkit.runner",
    "fit": "effkit.stage",
    "stack": "effkit.stage",
    "predict": "effkit.runner",
    "preflight": "effkit.preflight",
    "search": "effkit.pareto",
    "load_recipe": "effkit.recipe",
    "Collator": "effkit.data",
    "encode": "effkit.data",
    "encode_texts": "effkit.data",
    "read_text_file": "effkit.data",
}

if TYPE_CHECKING:
    from effkit.data import Collator, encode, encode_texts, read_text_file
    from effkit.pareto import search
    from effkit.preflight import preflight
    from effkit.recipe import load_recipe
    from effkit.runner import predict, run
    from effkit.stage import fit, stack


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'effkit' has no attribute {name!r}")
