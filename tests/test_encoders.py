"""Which transforms work with which encoder families: every cell of docs/encoders.md's table.

Each family is a tiny random transformers model saved to a folder (as a download would be). A
cell that works runs the real path: the preflight, then one stage that applies the transform
and trains 2 steps, saves, and a load of the saved folder gives the same logits. A cell that
does not work is refused by the preflight (``effkit validate``) with one message naming the
transform and the family, before anything runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import transformers

from effkit import load
from effkit.errors import EffkitError
from effkit.models import minilm_path
from effkit.preflight import preflight
from effkit.recipe import parse_recipe
from effkit.runner import Runner

ROOT = Path(__file__).parents[1]
SIZES = {"vocab_size": 30522, "hidden_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "intermediate_size": 128,
         "max_position_embeddings": 160}  # fmt: skip


def _configs() -> dict[str, transformers.PretrainedConfig]:
    return {
        "BERT": transformers.BertConfig(**SIZES),
        "RoBERTa": transformers.RobertaConfig(**SIZES, pad_token_id=0),
        "XLM-RoBERTa": transformers.XLMRobertaConfig(**SIZES, pad_token_id=0),
        "ELECTRA": transformers.ElectraConfig(embedding_size=32, **SIZES),
        "DistilBERT": transformers.DistilBertConfig(
            vocab_size=30522,
            dim=64,
            n_layers=2,
            n_heads=4,
            hidden_dim=128,
            max_position_embeddings=160,
        ),
        "DeBERTa-v2/v3": transformers.DebertaV2Config(
            **SIZES,
            relative_attention=True,
            position_buckets=32,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
        ),
        "ModernBERT": transformers.ModernBertConfig(
            vocab_size=30522,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=160,
            pad_token_id=0,
            bos_token_id=101,
            eos_token_id=102,
            cls_token_id=101,
            sep_token_id=102,
        ),
    }


TRANSFORMS = {
    "multiplex": "{name: multiplex, n: 2}",
    "multiplex (contextual)": "{name: multiplex, n: 2, mux: contextual}",
    "keep-layers": "{name: keep-layers, layers: [1]}",
    "cofi": "{name: cofi, sparsity: 0.3}",
    "cofi (hidden: false)": "{name: cofi, sparsity: 0.3, hidden: false}",
    "oneshot-prune": "{name: oneshot-prune, ratio: 0.3}",
    "distill (layers)": "{name: distill, teacher: TEACHER}",
    "distill (logits)": "{name: distill, teacher: TEACHER, layer_map: none}",
    "quantize": "{name: quantize}",
    "precision bf16": "{name: precision, dtype: bf16}",
}
"""The table's columns: a transform as a recipe's stage writes it."""

REFUSED = {
    ("ELECTRA", "cofi"): "cofi: hidden-dimension pruning cannot work here: the model projects",
    **{(family, column): f"{column.split()[0]} does not support {model_type} models"
       for family, model_type in [("DistilBERT", "distilbert"), ("ModernBERT", "modernbert")]
       for column in ["multiplex", "multiplex (contextual)", "keep-layers", "cofi",
                      "cofi (hidden: false)", "oneshot-prune"]},
    **{(family, "distill (layers)"): "layer distillation matches encoder layers, and "
       for family in ("DistilBERT", "ModernBERT")},
    **{("DeBERTa-v2/v3", column): f"{column.split()[0]} does not support deberta-v2 models"
       for column in ["cofi", "cofi (hidden: false)", "oneshot-prune"]},
}  # fmt: skip
"""The cells that are refused, with what the message says; every other cell works."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    found = {}
    for family, config in _configs().items():
        config.num_labels = 3
        torch.manual_seed(0)
        folder = root / re.sub(r"\W", "-", family)
        auto = transformers.AutoModelForSequenceClassification
        auto.from_config(config).save_pretrained(folder)
        found[family] = folder
    return found


def _recipe(folder: Path, transform: str):
    text = f"""\
name: cell
model: {{source: "{folder}", tokenizer: "{minilm_path()}"}}
data: {{source: builtin:synthetic, max_length: 24, limit: 40}}
stages:
  - name: t
    transforms: [{transform.replace("TEACHER", f'"{folder}"')}]
    train: {{steps: 2, batch_size: 4, eval_every: 0}}
evaluate: {{enabled: false}}
benchmark: {{enabled: false}}
"""
    return parse_recipe(text)


@pytest.mark.parametrize("column", list(TRANSFORMS))
@pytest.mark.parametrize("family", list(_configs()))
def test_each_family_and_transform_works_or_is_refused_up_front(folders, tmp_path, family,
                                                                 column):  # fmt: skip
    recipe = _recipe(folders[family], TRANSFORMS[column])
    refused = REFUSED.get((family, column))
    if refused is not None:
        with pytest.raises(EffkitError) as caught:
            preflight(recipe)
        assert refused in " ".join(caught.value.render().split())
        assert not (tmp_path / "run").exists()
        return
    result = Runner(recipe, tmp_path / "run", progress=False, cache=False).run()
    back = load(tmp_path / "run" / "stages" / "t" / "model")
    torch.manual_seed(1)
    ids = torch.randint(1000, 2000, (5, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    with torch.inference_mode():
        expected = result.model.eval()(input_ids=ids, attention_mask=mask).logits
        got = back.eval()(input_ids=ids, attention_mask=mask).logits
    assert got.shape == (5, 3)
    assert torch.equal(got, expected)


def test_the_support_table_in_the_docs_is_the_tested_one():
    text = (ROOT / "docs" / "encoders.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header == ["encoder", *TRANSFORMS]
    table = {}
    for line in rows[1 : 1 + len(_configs())]:  # the separator row starts "|-"
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[cells[0]] = dict(zip(TRANSFORMS, cells[1:], strict=True))
    assert list(table) == list(_configs())
    for family, cells in table.items():
        for column, cell in cells.items():
            expected = "no" if (family, column) in REFUSED else "yes"
            assert cell.split()[0] == expected, (family, column, cell)


def test_a_deberta_model_refuses_the_prefix_demultiplexer(folders):
    recipe = _recipe(folders["DeBERTa-v2/v3"], "{name: multiplex, n: 2, demux: prefix}")
    with pytest.raises(EffkitError, match="the prefix demultiplexer does not support deberta-v2"):
        preflight(recipe)
