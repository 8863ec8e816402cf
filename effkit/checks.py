"""Checks of a saved model folder and of a model's limits, each failing with one message.

A folder a user points effkit at may be missing, half copied, edited by hand or not effkit's;
these checks say which file is wrong and what would be right instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effkit.errors import EffkitError, ModelError, RecipeError
from effkit.storage import read_json


def is_effkit_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder saved by effkit."""
    return (Path(path) / "effkit.json").is_file()


def require_effkit_dir(path: str | Path) -> Path:
    """``path`` as a Path when it is an effkit model folder; a ModelError saying what it is not."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model folder '{path}' does not exist")
    if not is_effkit_dir(path):
        raise ModelError(
            f"'{path}' is not an effkit model folder (no effkit.json)",
            hint="use load_model() for transformers folders and hub ids",
        )
    return path


RESAVE = "the folder is damaged or was copied in part: copy or save it again"


def saved_json(file: Path) -> dict[str, Any]:
    """A JSON object from a saved folder; a ModelError naming the file when it is missing or bad."""
    try:
        data = read_json(file)
    except FileNotFoundError:
        raise ModelError(f"'{file}' is missing", hint=RESAVE) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ModelError(f"'{file}' is not valid JSON ({exc})", hint=RESAVE) from None
    if not isinstance(data, dict):
        raise ModelError(f"'{file}' is not a JSON object", hint=RESAVE)
    return data


def weights_problem(file: Path) -> str | None:
    """What is wrong with a safetensors file (missing, truncated, not safetensors), or None.

    Reads the header only: a file cut short or holding something else fails here, in
    milliseconds, instead of when the weights load."""
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        return f"the weights file '{file}' is missing"
    try:
        with safe_open(str(file), "pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        return f"'{file}' is not a complete safetensors file ({exc})"
    return None


def check_max_length(
    model: Any, max_length: int, where: str, *, error: type[EffkitError] = RecipeError
) -> None:
    """An ``error`` when ``max_length`` tokens per input exceed what ``model`` can read."""
    positions = getattr(model, "max_positions", None)
    if isinstance(positions, int) and max_length > positions:
        raise error(
            f"{where} {max_length} is longer than the model can read ({positions} positions)",
            where=where,
            hint=f"use {where} <= {positions}",
        )


BERT_LAYER_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value",
                    "attention.output.dense", "intermediate.dense", "output.dense")  # fmt: skip
"""The linear layers a BERT-style encoder layer holds, where pruning inside a layer finds them."""


def bert_layer_problem(layers: Any) -> str | None:
    """Why some encoder layer is not BERT-style (:data:`BERT_LAYER_PARTS`, all linear), or None."""
    from torch import nn

    for index, layer in enumerate(layers):
        for part in BERT_LAYER_PARTS:
            try:
                module = layer.get_submodule(part)
            except AttributeError:
                return f"encoder layer {index} ({type(layer).__name__}) has no {part}"
            if not isinstance(module, nn.Linear):
                return f"encoder layer {index}'s {part} is a {type(module).__name__}, not linear"
    return None
