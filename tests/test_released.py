"""Released MUX-PLMs checkpoints: effkit's model computes what the authors' code computes.

Tiny random checkpoints are written in the authors' key layout and config format, loaded through
``model.source``, and compared with an independent port of the authors' forward passes
(``official_mux.py``). The authors' classifiers attend to padding and drop segment ids; effkit
does so only with ``official_inputs: true`` (the switch for their fine-tuned checkpoints). When a
batch is not a multiple of N they fill the last group with randomly drawn rows, so their outputs
for that group depend on the draw: the comparison covers the full groups, and effkit's last group
is shown to be its inputs' own result.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import official_mux as om
import pytest
import torch
from transformers import AutoTokenizer

from effkit import load, load_model, save, stack
from effkit.cli import main
from effkit.errors import ModelError
from effkit.models import ModelConfig, minilm_path
from effkit.preflight import preflight
from effkit.recipe import load_recipe
from effkit_mux import Multiplex, plan

TOL = 1e-5
SEQ, TOK = "sequence-classification", "token-classification"
VARIANTS = [("bert", "gaussian_hadamard"), ("bert", "gaussian_attention_v2"),
            ("electra", "gaussian_hadamard")]  # fmt: skip
EFFKIT_MUX = {"gaussian_hadamard": "gaussian", "gaussian_attention_v2": "contextual"}


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(folder)
    return folder


def released(folder: Path, tokenizer_files: Path, family: str, mux: str, n: int, task: str,
             *, fmt: str = "bin", heads: tuple[str, ...] = ("classifier", "retrieval"),
             architecture: str | None = None, depth: int = 3, **changes: object):  # fmt: skip
    """A checkpoint in the authors' layout, written to ``folder``: (config, weights, folder)."""
    kind = "SequenceClassification" if task == SEQ else "TokenClassification"
    cfg = om.config(family, mux, n, depth=depth, architecture=architecture or kind)
    cfg.update(changes)
    sd = om.checkpoint(cfg, heads=heads)
    om.write(folder, cfg, sd, fmt)
    for file in tokenizer_files.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return cfg, sd, folder


def inputs(size: int, length: int = 12, seed: int = 0, pad: bool = True):
    """Token ids starting with [CLS] (101) and, with ``pad``, trailing padding of any length."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 128, (size, length), generator=gen)
    ids[:, 0] = om.CLS
    mask = torch.ones_like(ids)
    if pad:
        for row, n in enumerate(torch.randint(4, length + 1, (size,), generator=gen).tolist()):
            mask[row, n:], ids[row, n:] = 0, 0
    return ids, mask


def official_inputs(model, cfg: dict) -> None:
    """Switch the loaded model to the authors' inputs through the recipe's own path."""
    spec = {"n": cfg["num_instances"], "mux": EFFKIT_MUX[cfg["muxing_variant"]],
            "demux_depth": cfg["num_hidden_demux_layers"], "layout": "mux-plms"}  # fmt: skip
    stack(model, [Multiplex(**spec, official_inputs=True)])


@pytest.mark.parametrize("family,mux", VARIANTS)
@pytest.mark.parametrize("task", [SEQ, TOK])
def test_logits_match_the_authors_forward_pass(tmp_path, tokenizer_files, family, mux, task):
    n = 2
    fmt = "safetensors" if mux == "gaussian_attention_v2" else "bin"
    cfg, sd, folder = released(tmp_path / "ckpt", tokenizer_files, family, mux, n, task, fmt=fmt)
    model = load_model(str(folder), task=task, num_labels=3).eval()
    official_inputs(model, cfg)
    kind = "sequence" if task == SEQ else "token"
    with torch.inference_mode():
        for size in (n, 3 * n, 3 * n + 1):  # the last one is not a multiple of N
            ids, mask = inputs(size, seed=size)
            got = model(input_ids=ids, attention_mask=mask).logits
            want = om.classify(sd, cfg, ids, mask, kind)
            full = size - size % n
            assert got.shape == want.shape
            assert (got[:full] - want[:full]).abs().max() <= TOL
            if size % n:  # the authors' last group mixes in random rows; effkit's is its own
                other = om.classify(sd, cfg, ids, mask, kind, seed=7)
                alone = model(input_ids=ids[full:], attention_mask=mask[full:]).logits
                assert torch.allclose(got[full:], alone, atol=TOL)
                assert not torch.allclose(want[full:], other[full:], atol=TOL)


@pytest.mark.parametrize("family,mux", VARIANTS)
def test_effkit_inputs_agree_where_the_authors_handle_inputs_correctly(
    tmp_path, tokenizer_files, family, mux
):
    """Without padding and with segment 0, effkit's own masking is the authors' computation;
    with padding it differs (effkit does not attend to a group's common padding)."""
    cfg, sd, folder = released(tmp_path / "ckpt", tokenizer_files, family, mux, 2, SEQ)
    model = load_model(str(folder), task=SEQ, num_labels=3).eval()
    with torch.inference_mode():
        ids, mask = inputs(4, pad=False)
        got = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        assert (got.logits - om.classify(sd, cfg, ids, mask, "sequence")).abs().max() <= TOL
        ids, mask = inputs(4, seed=3)
        mask[:, 8:], ids[:, 8:] = 0, 0  # padding shared by every instance of a group
        padded = model(input_ids=ids, attention_mask=mask).logits
        assert (padded - om.classify(sd, cfg, ids, mask, "sequence")).abs().max() > TOL


@pytest.mark.parametrize("family,mux", VARIANTS)
def test_pretraining_heads_match(tmp_path, tokenizer_files, family, mux):
    """A pre-trained checkpoint (no classifier): the retrieval / MLM head and, for MUX-ELECTRA,
    the discriminator are loaded and compute the authors' logits."""
    heads = ("retrieval", "discriminator") if family == "electra" else ("retrieval",)
    arch = "PreTraining" if family == "electra" else "MaskedLM"
    n = 5
    cfg, sd, folder = released(tmp_path / "ckpt", tokenizer_files, family, mux, n, TOK,
                               heads=heads, architecture=arch, depth=2)  # fmt: skip
    model = load_model(str(folder), task=TOK, num_labels=3).eval()
    official_inputs(model, cfg)
    adapter = model.adapter
    assert adapter.lm_head is not None and (family == "bert") == (adapter.electra_head is None)
    ids, mask = inputs(2 * n)
    with torch.inference_mode():
        h = adapter.run(model, plan(2 * n, n), ids, mask, raw=True).last_hidden_state
        want_h = om.hidden(sd, cfg, ids, mask)
        assert (h - want_h).abs().max() <= TOL
        # the heads, on the same encoder output
        instance = torch.randint(0, n, h.shape[:2], generator=torch.Generator().manual_seed(1))
        vocab = adapter.lm_head(adapter.demultiplexer(h, instance))
        assert (vocab - om.retrieval(sd, cfg, h, instance)).abs().max() <= TOL
        if family == "electra":
            states = adapter.demultiplexer(h)  # [G, N, L, H]
            logits = adapter.electra_head(states).reshape(2 * n, -1)
            assert (logits - om.discriminator(sd, cfg, h)).abs().max() <= TOL


def test_a_loaded_checkpoint_saves_and_loads_as_itself(tmp_path, tokenizer_files):
    cfg, sd, folder = released(tmp_path / "ckpt", tokenizer_files, "bert",
                               "gaussian_attention_v2", 2, SEQ)  # fmt: skip
    model = load_model(str(folder), task=SEQ, num_labels=3).eval()
    official_inputs(model, cfg)
    again = load(save(model, tmp_path / "saved"))
    ids, mask = inputs(4)
    with torch.inference_mode():
        want = om.classify(sd, cfg, ids, mask, "sequence")
        assert (again(input_ids=ids, attention_mask=mask).logits - want).abs().max() <= TOL


def test_a_checkpoint_for_another_task_gets_a_fresh_head(tmp_path, tokenizer_files):
    _, sd, folder = released(tmp_path / "ckpt", tokenizer_files, "bert", "gaussian_hadamard", 2,
                             SEQ)  # fmt: skip
    model = load_model(str(folder), task=TOK, num_labels=5)
    assert model.hf.classifier.weight.shape == (5, 32)
    assert torch.equal(model.adapter.multiplexer.keys, sd["instance_embedding"])


def _broken(weights: dict, change: str) -> None:
    if change == "missing":
        del weights["demux_module.dense_2.weight"]
    elif change == "extra":
        weights["demux_module.dense_9.weight"] = torch.zeros(32, 32)
    elif change == "shape":
        weights["instance_embedding"] = torch.zeros(3, 32)
    else:
        weights["pooler_of_another_model.weight"] = torch.zeros(2)


@pytest.mark.parametrize("change,says", [
    ("missing", "1 missing (adapter.demultiplexer.dense.1.weight)"),
    ("extra", "not in its layout (adapter.demultiplexer.dense.8.weight)"),
    ("shape", "adapter.multiplexer.keys (3, 32) (expected (2, 32))"),
    ("unknown", "belong to no part of the MUX-PLMs bert layout: pooler_of_another_model"),
])  # fmt: skip
def test_a_wrong_layout_is_one_clear_error(tmp_path, tokenizer_files, change, says):
    cfg, sd, folder = released(tmp_path / "ckpt", tokenizer_files, "bert", "gaussian_hadamard", 2,
                               SEQ)  # fmt: skip
    weights = dict(sd)
    _broken(weights, change)
    om.write(folder, cfg, weights)
    with pytest.raises(ModelError) as info:
        load_model(str(folder), task=SEQ, num_labels=3)
    assert says in str(info.value)


def _recipe(tmp_path: Path, source: Path, transforms: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: released
        model: {{source: {source}}}
        task: {{type: sequence-classification}}
        data: {{source: builtin:synthetic, max_length: 16}}
        stages:
          - name: finetune
            transforms: {transforms}
            objective: mux-task
            train: {{steps: 1, batch_size: 4}}
        benchmark: {{enabled: false}}
        """), encoding="utf-8")  # fmt: skip
    return path


def test_the_preflight_refuses_a_multiplex_that_is_not_the_checkpoints(tmp_path, tokenizer_files,
                                                                        capsys):  # fmt: skip
    *_, folder = released(tmp_path / "ckpt", tokenizer_files, "bert", "gaussian_hadamard", 2, SEQ)
    same = "[{name: multiplex, n: 2, demux_depth: 3, layout: mux-plms}]"
    assert preflight(load_recipe(_recipe(tmp_path, folder, same))).model.forward_by == "multiplex"
    assert preflight(load_recipe(_recipe(tmp_path, folder, "[]"))).model.group_size == 2
    other = _recipe(tmp_path, folder, "[{name: multiplex, n: 5, demux_depth: 3, layout: mux-plms}]")
    with pytest.raises(ModelError, match="holds a multiplexer with N=2, mux gaussian"):
        preflight(load_recipe(other))
    assert _cli(["validate", str(other)]) == 2
    err = capsys.readouterr().err
    assert "asks for N=5" in err and "Set n: 2" in err and "Traceback" not in err


def test_an_unknown_variant_is_one_clear_error(tmp_path, tokenizer_files, capsys):
    *_, folder = released(tmp_path / "ckpt", tokenizer_files, "bert", "gaussian_hadamard", 2, SEQ,
                          muxing_variant="binary_hadamard")  # fmt: skip
    with pytest.raises(ModelError, match="muxing_variant 'binary_hadamard'"):
        load_model(ModelConfig(source=str(folder)), task=SEQ, num_labels=3)
    assert _cli(["validate", str(_recipe(tmp_path, folder, "[]"))]) == 2
    err = capsys.readouterr().err
    assert "binary_hadamard" in err and "gaussian_hadamard or gaussian_attention_v2" in err
    assert "Traceback" not in err


def _cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
