"""effkit: composable efficiency transforms for transformer encoders.

The Python API mirrors the recipe format::

    from effkit import load_model, stack, fit
    model = load_model("builtin:minilm-l6", task="sequence-classification", num_labels=5)
    model = stack(model, [KeepLayers(layers=[0, 2, 4])])
    result = run("recipes/quickstart.yaml")         # or run(Recipe(...)) from Python
    result.metrics["test"]["accuracy"], model.predict(["some text"])
    front = search("recipes/pareto_search.yaml", trials=12).front  # throughput vs accuracy
"""

from effkit.errors import (
    DataError,
    EffkitError,
    ModelError,
    PluginError,
    RecipeError,
    RunError,
)
from effkit.models import EffkitModel, ModelConfig, load, load_model, save
from effkit.objectives import Objective
from effkit.registry import register
from effkit.task import Task
from effkit.transform import StageContext, Transform

__all__ = [
    "DataError",
    "EffkitError",
    "EffkitModel",
    "ModelConfig",
    "ModelError",
    "Objective",
    "PluginError",
    "RecipeError",
    "RunError",
    "StageContext",
    "Task",
    "Transform",
    "fit",
    "load",
    "load_model",
    "load_recipe",
    "predict",
    "register",
    "run",
    "save",
    "search",
    "stack",
]


def __getattr__(name: str) -> object:
    # The recipe runner pulls in accelerate and datasets; import it on first use only.
    if name in ("run", "fit", "stack", "predict"):
        from effkit import runner

        return getattr(runner, name)
    if name == "search":
        from effkit.pareto import search

        return search
    if name == "load_recipe":
        from effkit.recipe import load_recipe

        return load_recipe
    raise AttributeError(f"module 'effkit' has no attribute {name!r}")
