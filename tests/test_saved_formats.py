"""Model folders saved by earlier versions of effkit load into the same model today.

``tests/fixtures/saved/v1`` holds tiny models written in format version 1 by
``tests/fixtures/make_saved_models.py``: plain, layer-dropped, multiplexed (sequence and token
tasks), one-shot pruned, CoFi-pruned (alone and under multiplexing) and int8. Each folder keeps
the inputs it was run on and the logits it gave; loading must reproduce them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effkit import load

SAVED = Path(__file__).parent / "fixtures" / "saved"
FOLDERS = sorted(p for p in SAVED.glob("v*/*") if p.is_dir())


def test_every_format_version_has_fixtures():
    assert {p.parent.name for p in FOLDERS} >= {"v1"}
    assert len(FOLDERS) >= 8


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_a_saved_folder_gives_the_logits_it_was_saved_with(folder: Path):
    expected = load_file(str(folder / "expected.safetensors"))
    model = load(folder)
    inputs = {k: v for k, v in expected.items() if k != "logits"}
    with torch.inference_mode():
        logits = model(**inputs).logits.float()
    torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=0)


def test_a_folder_from_a_newer_format_is_refused_with_one_message(tmp_path: Path):
    import json
    import shutil

    from effkit import ModelError

    folder = shutil.copytree(SAVED / "v1" / "plain", tmp_path / "newer")
    meta = json.loads((folder / "effkit.json").read_text())
    meta["format_version"] = 99
    (folder / "effkit.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="format effkit-model v99; this effkit reads"):
        load(folder)


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _pickle_as_weights(file: Path) -> None:
    import pickle

    file.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))


DAMAGE = {
    "truncated weights": ("weights", _truncate, "is not a complete safetensors file"),
    "a pickle as weights": ("weights", _pickle_as_weights, "is not a complete safetensors file"),
    "no weights": ("weights", Path.unlink, "the weights file .* is missing"),
    "no config.json": ("config.json", Path.unlink, r"config\.json' is missing"),
    "malformed effkit.json": (
        "effkit.json",
        lambda f: f.write_text('{"format": '),
        r"effkit\.json' is not valid JSON",
    ),
    "effkit.json not an object": (
        "effkit.json",
        lambda f: f.write_text("[1, 2]"),
        "is not a JSON object",
    ),
    "effkit.json without a task": (
        "effkit.json",
        lambda f: f.write_text('{"format": "effkit-model", "format_version": 2}'),
        "does not describe a task",
    ),
}


@pytest.fixture(scope="module")
def saved_v2(tmp_path_factory) -> Path:
    from effkit.models import ModelConfig, load_model, save

    model = load_model(ModelConfig(source="preset:tiny"), task="sequence-classification",
                       labels=["a", "b"])  # fmt: skip
    return save(model, tmp_path_factory.mktemp("v2") / "plain")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_folder_is_one_message_naming_the_file(damage, version, saved_v2, tmp_path):
    import shutil

    from effkit import ModelError
    from effkit.hf_config import WEIGHTS
    from effkit.models import WEIGHTS_V1

    source = SAVED / "v1" / "plain" if version == "v1" else saved_v2
    folder = shutil.copytree(source, tmp_path / "model")
    name, harm, message = DAMAGE[damage]
    weights = WEIGHTS_V1 if version == "v1" else WEIGHTS
    harm(folder / (weights if name == "weights" else name))
    with pytest.raises(ModelError, match=message):
        load(folder)
