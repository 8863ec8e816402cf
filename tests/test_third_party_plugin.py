"""A transform from a separate distribution is found through its entry point, with no pip.

The test writes what ``pip install`` would leave in site-packages: a package folder and its
``.dist-info`` with ``entry_points.txt``. The transform is the ``freeze`` example of
docs/plugins.md, read from the guide; it must validate in a recipe, train with ``fit`` and
survive save and load.
"""

from __future__ import annotations

import sys
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import torch
from plugin_guide import modules

from effkit import registry
from effkit.data import DataConfig, load_task_data
from effkit.errors import RecipeError
from effkit.models import load, load_model, save
from effkit.recipe import parse_recipe
from effkit.runner import fit

PACKAGE = "effkit_freeze_example"

# The freeze transform of docs/plugins.md, read from the guide itself.
FREEZE_SOURCE = modules()["freeze"]

RECIPE = """\
name: third-party
model: {source: "preset:tiny"}
data: {source: "builtin:synthetic", max_length: 32}
stages:
  - name: warmup
    transforms:
      - {name: freeze, patterns: ["*.embeddings.*", "*.layer.0.attention.*"]}
    train: {steps: 4, batch_size: 8, lr: 1.0e-3, checkpoint_every: 0}
"""


@pytest.fixture
def freeze_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An installed-looking distribution ``effkit-freeze-example`` on sys.path."""
    site = tmp_path / "site"
    (site / PACKAGE).mkdir(parents=True)
    (site / PACKAGE / "__init__.py").write_text(FREEZE_SOURCE)
    info = site / f"{PACKAGE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: effkit-freeze-example\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(f"[effkit.transforms]\nfreeze = {PACKAGE}:Freeze\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    registry._loaded[registry.TRANSFORMS].pop("freeze", None)
    sys.modules.pop(PACKAGE, None)


@pytest.fixture(scope="module")
def synthetic():
    return load_task_data(
        DataConfig(source="builtin:synthetic", max_length=32), "sequence-classification"
    )


def test_entry_point_is_discovered(freeze_dist):
    assert "freeze" in registry.names(registry.TRANSFORMS)
    cls = registry.get(registry.TRANSFORMS, "freeze")
    assert cls.__module__ == PACKAGE  # not some other plugin of the same name
    rows = {row["name"]: row for row in registry.describe(registry.TRANSFORMS)}
    assert rows["freeze"]["origin"] == f"{PACKAGE}:Freeze"
    assert [f["name"] for f in rows["freeze"]["fields"]] == ["patterns"]


def test_recipe_validates_and_names_the_closest_field(freeze_dist):
    recipe = parse_recipe(RECIPE)
    (transform,) = recipe.stages[0].build_transforms()
    assert type(transform).__module__ == PACKAGE
    assert transform.patterns == ["*.embeddings.*", "*.layer.0.attention.*"]
    assert transform.spec()["name"] == "freeze"

    with pytest.raises(RecipeError, match=r"did you mean 'patterns'") as err:
        parse_recipe(RECIPE.replace("patterns:", "pattern:"))
    assert "transforms[freeze].pattern" in str(err.value)
    assert "<recipe>:7" in str(err.value)


def test_fit_freezes_then_save_and_load_replays(freeze_dist, synthetic, tmp_path):
    stage = parse_recipe(RECIPE).stages[0]
    transform = stage.build_transforms()[0]
    model = load_model("preset:tiny", num_labels=3)
    model.max_length = 32
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    frozen = {n for n in before if any(fnmatchcase(n, p) for p in transform.patterns)}
    assert frozen and len(frozen) < len(before)

    model, record = fit(
        model, data=synthetic, transforms=[transform], train=stage.train, progress=False
    )

    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed == set(before) - frozen
    # the freeze ends with the stage
    assert all(p.requires_grad for p in after.values())
    assert record["transforms"] == [
        {
            "name": "freeze",
            "frozen_tensors": len(frozen),
            "frozen_parameters": sum(before[n].numel() for n in frozen),
        }
    ]
    assert model.transforms == [transform]

    path = save(model, tmp_path / "model")
    loaded = load(path)
    (replayed,) = loaded.transforms
    assert type(replayed) is type(transform)
    assert replayed.patterns == transform.patterns
    # rebuilding froze nothing
    assert all(p.requires_grad for p in loaded.parameters())
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    inputs = torch.randint(0, model.vocab_size, (2, 12))
    torch.testing.assert_close(
        loaded(input_ids=inputs).logits, model.eval()(input_ids=inputs).logits
    )


def test_registry_is_clean_after_the_distribution_is_gone():
    # runs after the tests above: the fixture's teardown left nothing behind
    assert "freeze" not in registry._loaded[registry.TRANSFORMS]
    assert PACKAGE not in sys.modules
    assert "freeze" not in registry.names(registry.TRANSFORMS)
