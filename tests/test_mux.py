"""Data multiplexing: one prediction per input in input order, every mux/demux, save and load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from effkit import load, load_model, save
from effkit.data import DataConfig, load_task_data
from effkit.errors import ModelError
from effkit.runner import fit, stack
from effkit.train import TrainConfig
from effkit_mux import Multiplex, plan

LABELS = ["O", "B-x", "I-x"]


def tiny(task: str = "sequence-classification", **mux):
    torch.manual_seed(0)
    model = load_model("preset:tiny", task=task, labels=LABELS).eval()
    return stack(model, [Multiplex(**mux)]) if mux else model


def batch(size: int, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (size, length), generator=gen)
    mask = torch.ones_like(ids)
    lengths = torch.randint(3, length + 1, (size,), generator=gen)
    for row, n in enumerate(lengths.tolist()):
        mask[row, n:] = 0
        ids[row, n:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 40), n=st.integers(1, 12), seed=st.integers(0, 3) | st.none(),
       shift=st.integers(0, 11))  # fmt: skip
def test_plan_gives_every_input_exactly_one_slot(size, n, seed, shift):
    layout = plan(size, n, seed=seed, shift=shift % n)
    assert layout.order.shape == (layout.groups * n,)
    assert layout.groups == -(-size // n)
    # every input's chosen slot holds that input, and every input is somewhere
    assert torch.equal(layout.order[layout.first], torch.arange(size))
    assert set(layout.order.tolist()) == set(range(size))
    # a group only holds its own members (filler slots copy members of the same group)
    groups = layout.order.view(layout.groups, n)
    members = [set(g.tolist()) for g in groups]
    assert sum(len(m) for m in members) == size


@pytest.mark.parametrize("task", ["sequence-classification", "token-classification"])
@pytest.mark.parametrize("mux", ["gaussian", "binary", "orthogonal", "contextual"])
@pytest.mark.parametrize("demux", ["rsa", "prefix"])
def test_each_input_gets_its_own_output_in_order(task, mux, demux):
    model = tiny(task, n=3, mux=mux, demux=demux)
    inputs = batch(7)
    with torch.inference_mode():
        logits = model(**inputs).logits
        expected = (7, 3) if task.startswith("sequence") else (7, 10, 3)
        assert logits.shape == expected
        # the last group holds input 6 alone (with copies); run it on its own: same output
        alone = model(**{k: v[6:7] for k, v in inputs.items()}).logits
        assert torch.allclose(logits[6], alone[0], atol=1e-5)
        # a group's outputs do not depend on the other groups in the batch
        first_group = model(**{k: v[:3] for k, v in inputs.items()}).logits
        assert torch.allclose(logits[:3], first_group, atol=1e-5)


@pytest.mark.parametrize("pooling", ["first", "mean"])
@pytest.mark.parametrize("demux", ["rsa", "prefix"])
def test_head_states_are_what_the_head_read_in_input_order(demux, pooling):
    for task in ("token-classification", "sequence-classification"):
        model = tiny(task, n=3, demux=demux, pooling=pooling)
        with torch.inference_mode():
            logits = model(**batch(7)).logits
            states = model.adapter.head_states()
            hf = model.hf
            if task == "token-classification":
                assert states.shape == (7, 10, hf.config.hidden_size)
                assert torch.allclose(hf.classifier(states), logits, atol=1e-5)
            else:
                assert states.shape == (7, 1, hf.config.hidden_size)
                pooled = hf.bert.pooler(states)
                assert torch.allclose(hf.classifier(pooled), logits, atol=1e-5)
            # a raw pass (pre-training objectives) leaves no head states behind
            model.adapter.run(model, plan(7, 3), **batch(7), raw=True)
            assert model.adapter.head_states() is None


@settings(max_examples=15, deadline=None)
@given(size=st.integers(1, 23), n=st.sampled_from([1, 2, 5, 10]))
def test_any_batch_size_gives_one_row_per_input(size, n):
    model = tiny(n=n)
    with torch.inference_mode():
        assert model(**batch(size)).logits.shape == (size, 3)


def test_padding_instances_never_change_results():
    model = tiny(n=4)
    inputs = batch(5)
    with torch.inference_mode():
        full = model(**inputs).logits
        # input 4 sits alone in the second group; extra rows of another group change nothing
        more = model(**{k: torch.cat([v, v[:3]]) for k, v in inputs.items()}).logits
    assert torch.allclose(full[:4], more[:4], atol=1e-5)


def test_attention_masks_are_combined_as_their_union():
    model = tiny(n=2)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    union = model.adapter.combined_mask(mask)
    assert union.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_segment_ids_reach_the_encoder():
    model = tiny(n=2)
    inputs = batch(4)
    with torch.inference_mode():
        plain = model(**inputs).logits
        pairs = model(**inputs, token_type_ids=(torch.arange(10) > 4).long().expand(4, 10)).logits
    assert not torch.allclose(plain, pairs)


def test_grouping_seed_changes_groups_but_not_the_mapping():
    model = tiny(n=2)
    inputs = batch(6)
    with torch.inference_mode():
        a = model(**inputs).logits
        model.inference_seed = 3
        b = model(**inputs).logits
        layout = plan(6, 2, seed=3)
        # input 0's partner under seed 3; run that pair alone in the same slots
        group = layout.order.view(3, 2)[(layout.first[0] // 2).item()]
        pair = {k: v[group] for k, v in inputs.items()}
        model.inference_seed = None
        alone = model(**pair).logits
    position = group.tolist().index(0)
    assert torch.allclose(b[0], alone[position], atol=1e-5)
    assert not torch.allclose(a, b)


def test_ensembling_averages_every_slot():
    model = tiny(n=3, ensemble=True)
    inputs = batch(3)
    with torch.inference_mode():
        averaged = model(**inputs).logits
        model.adapter.ensemble = 1
        rows = []
        for shift in range(3):
            layout = plan(3, 3, shift=shift)
            out = model.adapter.run(model, layout, inputs["input_ids"], inputs["attention_mask"])
            rows.append(out.logits[layout.first])
    assert torch.allclose(averaged, torch.stack(rows).mean(0), atol=1e-5)
    model.adapter.ensemble = 2  # two of the three slots
    with torch.inference_mode():
        partial = model(**inputs).logits
    assert torch.allclose(partial, torch.stack(rows[:2]).mean(0), atol=1e-5)


@pytest.mark.parametrize(("setting", "slots"), [(True, 3), (False, 1), (2, 2), (3, 3)])
def test_ensemble_takes_a_number_of_slots_or_a_switch(setting, slots):
    assert Multiplex(n=3, ensemble=setting).ensemble == slots


@pytest.mark.parametrize("setting", [0, 4, -1])
def test_ensemble_outside_one_to_n_is_refused(setting):
    with pytest.raises(ValidationError, match="give 1 to 3"):
        Multiplex(n=3, ensemble=setting)


@pytest.mark.parametrize("mux", ["gaussian", "orthogonal", "contextual"])
@pytest.mark.parametrize("demux", ["rsa", "prefix"])
def test_save_and_load_give_the_same_function(tmp_path, mux, demux):
    model = tiny("token-classification", n=2, mux=mux, demux=demux)
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    inputs = batch(5)
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, back(**inputs).logits)
    assert torch.equal(model.adapter.multiplexer.keys, back.adapter.multiplexer.keys)


@pytest.mark.parametrize("demux", ["rsa", "prefix"])
def test_layers_before_mixing_see_each_input_alone(tmp_path, demux):
    """mix_after=1: layer 0 runs on every slot with its own mask, as the plain model runs it."""
    model = tiny("token-classification", n=3, demux=demux, mix_after=1)
    plain = tiny("token-classification")  # the same seed: the same backbone weights
    inputs = batch(7)
    seen: dict[str, torch.Tensor] = {}
    layers = model.base.encoder.layer
    hooks = [layers[0].register_forward_hook(lambda m, a, out: seen.update(first=out)),
             layers[1].register_forward_hook(lambda m, a, out: seen.update(mixed=out))]  # fmt: skip
    with torch.inference_mode():
        logits = model(**inputs).logits
        layout = model.adapter.layout
        for hook in hooks:
            hook.remove()
        alone = plain.base(**inputs, output_hidden_states=True).hidden_states[1]
    p = model.adapter.extra_positions
    first = seen["first"][layout.first][:, p:]  # each input's own slot, prefix positions cut
    mask = inputs["attention_mask"].bool()
    assert first.shape == alone.shape
    if demux == "rsa":  # (prefix: the input also attends to its own slot's prefix tokens)
        assert torch.allclose(first[mask], alone[mask], atol=1e-5)
    assert seen["mixed"].shape[0] == layout.groups  # layer 1 runs once per group
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    with torch.inference_mode():
        assert torch.equal(back(**inputs).logits, logits)


@pytest.mark.parametrize("family", ["roberta", "electra", "deberta-v2"])
@pytest.mark.parametrize("mix_after", [0, 1])
@pytest.mark.parametrize("demux", ["rsa", "prefix"])
def test_other_bert_family_encoders_multiplex(family, mix_after, demux):
    if family == "deberta-v2" and demux == "prefix":
        pytest.skip("refused by the preflight (tests/test_encoders.py)")
    import transformers

    from effkit import EffkitModel
    from effkit.task import Task

    torch.manual_seed(0)
    sizes = {"vocab_size": 6000, "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 128, "num_labels": 3}  # fmt: skip
    if family == "roberta":
        hf = transformers.RobertaForTokenClassification(transformers.RobertaConfig(**sizes))
    elif family == "electra":  # a narrower embedding projected up to the hidden size
        config = transformers.ElectraConfig(embedding_size=32, **sizes)
        hf = transformers.ElectraForTokenClassification(config)
    else:  # relative positions; its embeddings apply each input's attention mask
        config = transformers.DebertaV2Config(relative_attention=True, position_buckets=32,
                                              pos_att_type=["p2c", "c2p"], **sizes)  # fmt: skip
        hf = transformers.DebertaV2ForTokenClassification(config)
    model = EffkitModel(hf, None, Task(type="token-classification", labels=LABELS)).eval()
    model = stack(model, [Multiplex(n=3, demux=demux, mix_after=mix_after)]).eval()
    inputs = batch(7)
    with torch.inference_mode():
        logits = model(**inputs).logits
        alone = model(**{k: v[6:7] for k, v in inputs.items()}).logits
    assert logits.shape == (7, 10, 3)
    assert torch.allclose(logits[6], alone[0], atol=1e-5)


def test_mix_after_needs_a_layer_left_to_multiplex():
    with pytest.raises(ModelError, match="mix_after=2"):
        tiny(n=2, mix_after=2)  # the tiny encoder has 2 layers
    from effkit_layers import KeepLayers

    model = stack(tiny(n=2, mix_after=1), [KeepLayers(layers=[1])])
    with pytest.raises(ModelError, match="no layer to run multiplexed"):
        model(**batch(3))


def test_key_mean_and_spread_shape_the_gaussian_keys(tmp_path):
    model = tiny(n=3, key_mean=1.0, key_std=0.5)
    keys = model.adapter.multiplexer.keys
    assert keys.shape[0] == 3 and abs(float(keys.mean()) - 1.0) < 0.1
    assert abs(float(keys.std()) - 0.5) < 0.1
    paper = tiny(n=3).adapter.multiplexer.keys  # same seed: the same draw, shifted and scaled
    assert torch.allclose(keys, 1.0 + 0.5 * paper)
    save(model, tmp_path / "m")
    assert torch.equal(load(tmp_path / "m").adapter.multiplexer.keys, keys)
    with pytest.raises(ValueError, match="shape Gaussian keys"):
        Multiplex(n=2, mux="binary", key_mean=1.0)


def test_multiplex_applies_once():
    model = tiny(n=2)
    with pytest.raises(ModelError, match="applies once"):
        stack(model, [Multiplex(n=2)])


def test_n_must_be_positive():
    with pytest.raises(ValueError):
        Multiplex(n=0)


@pytest.fixture(scope="module")
def synthetic():
    return load_task_data(DataConfig(source="builtin:synthetic", max_length=24),
                          "sequence-classification")  # fmt: skip


@pytest.mark.parametrize("objective", ["retrieval", "mlm", "electra"])
def test_pretraining_objectives_train_and_leave_a_loadable_model(tmp_path, synthetic, objective):
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=synthetic.labels)
    model.max_length = 24
    model, record = fit(model, data=synthetic, transforms=[Multiplex(n=2)], objective=objective,
                        train=TrainConfig(steps=4, batch_size=8, lr=1e-3, log_every=1),
                        progress=False)  # fmt: skip
    history = record["train"]["history"]
    assert len(history) == 4 and all(row["loss"] > 0 for row in history)
    assert any(key.endswith("accuracy") for key in history[0])
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    inputs = batch(4)
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, back(**inputs).logits)


def test_retrieval_priming_learns_to_recover_tokens(synthetic):
    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=synthetic.labels)
    model.max_length = 24
    _, record = fit(model, data=synthetic, transforms=[Multiplex(n=2)], objective="retrieval",
                    train=TrainConfig(steps=60, batch_size=16, lr=3e-3, log_every=10),
                    progress=False)  # fmt: skip
    history = record["train"]["history"]
    assert history[-1]["loss"] < history[0]["loss"] * 0.7
    assert history[-1]["retrieval_accuracy"] > history[0]["retrieval_accuracy"]


@pytest.mark.parametrize("demux", ["rsa", "prefix"])
def test_retrieval_of_all_instances_scores_every_instance_of_every_position(demux):
    from effkit_mux.adapter import adapter_of
    from effkit_mux.objectives import _ensure_vocab_head, _run_raw, retrieval_loss

    n = 3
    model = tiny(n=n, demux=demux)
    adapter = adapter_of(model, "test")
    _ensure_vocab_head(model, adapter)
    inputs = batch(7)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        out, layout = _run_raw(model, adapter, inputs, ids)
        hidden = out.last_hidden_state
        loss, _ = retrieval_loss(adapter, hidden, layout, ids, mask, sample=False)
        # the same targets, one instance at a time through the single-instance path
        groups, length = layout.groups, ids.shape[1]
        gold = ids[layout.order].view(groups, n, length)
        valid = mask[layout.order].view(groups, n, length).bool()
        logits, targets = [], []
        for slot in range(n):
            states = adapter.demultiplexer(hidden, torch.full((groups, length), slot))
            logits.append(adapter.lm_head(states[valid[:, slot]]))
            targets.append(gold[:, slot][valid[:, slot]])
        expected = F.cross_entropy(torch.cat(logits), torch.cat(targets))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("sample", [True, False])
def test_retrieval_with_no_position_to_score_is_a_zero_loss(sample):
    from effkit_mux.adapter import adapter_of
    from effkit_mux.objectives import _ensure_vocab_head, _run_raw, retrieval_loss

    model = tiny(n=2)
    adapter = adapter_of(model, "test")
    _ensure_vocab_head(model, adapter)
    inputs = batch(4)
    out, layout = _run_raw(model, adapter, inputs, inputs["input_ids"])
    none = torch.zeros_like(inputs["attention_mask"])
    loss, accuracy = retrieval_loss(adapter, out.last_hidden_state, layout, inputs["input_ids"],
                                    none, sample=sample)  # fmt: skip
    assert float(loss) == 0.0 and accuracy == 0.0
    loss.backward()  # still part of the graph: a training step can take it


@pytest.mark.parametrize(("n", "mix_after"), [(2, 0), (5, 0), (2, 1)])
def test_priming_all_instances_learns(synthetic, n, mix_after):
    from effkit_mux import RetrievalObjective

    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=synthetic.labels)
    model.max_length = 24
    objective = RetrievalObjective(sample_instances=False, position_fraction=0.5)
    train = TrainConfig(steps=40, batch_size=8 * n, lr=3e-3, log_every=10)
    mux = Multiplex(n=n, mux="binary", mix_after=mix_after)
    _, record = fit(model, data=synthetic, transforms=[mux], objective=objective, train=train,
                    progress=False)  # fmt: skip
    history = record["train"]["history"]
    assert history[-1]["loss"] < history[0]["loss"] * 0.7


def test_task_fine_tuning_with_auxiliary_retrieval(synthetic):
    from effkit_mux import MuxTaskObjective

    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=synthetic.labels)
    model = stack(model, [Multiplex(n=2)])
    model, record = fit(
        model,
        data=synthetic,
        objective=MuxTaskObjective(retrieval_weight=0.5),
        train=TrainConfig(steps=3, batch_size=8, log_every=1),
        progress=False,
    )
    assert "retrieval" in record["train"]["history"][0]
    assert "accuracy" in record["validation"]


def test_objectives_need_a_multiplexed_model(synthetic):
    model = load_model("preset:tiny", labels=synthetic.labels)
    with pytest.raises(ModelError, match="apply the multiplex transform"):
        fit(model, data=synthetic, objective="retrieval", train=TrainConfig(steps=1),
            progress=False)  # fmt: skip


def test_odd_batch_sizes_train(synthetic):
    model = load_model("preset:tiny", labels=synthetic.labels)
    fit(model, data=synthetic, transforms=[Multiplex(n=3)], objective="mux-task",
        train=TrainConfig(steps=2, batch_size=7), progress=False)  # fmt: skip


@pytest.mark.parametrize(("mux", "demux"), [("gaussian", "rsa"), ("orthogonal", "prefix"),
                                            ("binary", "prefix")])  # fmt: skip
def test_hidden_pruning_keeps_what_masking_computed(mux, demux):
    model = tiny(n=2, mux=mux, demux=demux)
    adapter = model.adapter
    kept = torch.tensor([0, 1, 2, 5, 9, 20, 33, 40])
    positions = 5 + adapter.extra_positions
    h = torch.randn(3, positions, 64)
    x = torch.randn(3, 2, positions, 64)
    masked_h, masked_x = torch.zeros_like(h), torch.zeros_like(x)
    masked_h[..., kept], masked_x[..., kept] = h[..., kept], x[..., kept]
    with torch.inference_mode():
        before_demux = adapter.demultiplexer(masked_h)[..., kept]
        before_mux = adapter.multiplexer(masked_x, None)[..., kept]
    adapter.prune_hidden(kept)
    with torch.inference_mode():
        assert torch.allclose(before_demux, adapter.demultiplexer(h[..., kept]), atol=1e-5)
        assert torch.allclose(before_mux, adapter.multiplexer(x[..., kept], None), atol=1e-5)


def test_hidden_pruning_refuses_the_contextual_multiplexer():
    model = tiny(n=2, mux="contextual")
    with pytest.raises(ModelError, match="ContextualMux"):
        model.adapter.prune_hidden(torch.arange(8))


@pytest.mark.parametrize("order", ["keep-then-mux", "mux-then-keep"])
def test_multiplexing_composes_with_a_smaller_student_in_either_order(tmp_path, order):
    from effkit_layers import KeepLayers

    torch.manual_seed(0)
    model = load_model("preset:tiny", labels=LABELS).eval()
    transforms = [KeepLayers(layers=[1]), Multiplex(n=2)]
    model = stack(model, transforms if order == "keep-then-mux" else transforms[::-1])
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    assert len(back.encoder_layers()) == 1
    inputs = batch(5)
    with torch.inference_mode():
        assert torch.equal(model(**inputs).logits, back(**inputs).logits)


def test_a_new_task_head_keeps_the_model_multiplexed(tmp_path):
    model = tiny(n=2)
    save(model, tmp_path / "pretrained")
    again = load_model(str(tmp_path / "pretrained"), labels=["a", "b"])
    assert again.task.labels == ["a", "b"]
    calls = []
    again.adapter.multiplexer.register_forward_hook(lambda *args: calls.append(1))
    inputs = batch(4)
    with torch.inference_mode():
        logits = again.eval()(**inputs).logits
    assert logits.shape == (4, 2) and calls, "the multiplexer runs under the new head"
    save(again, tmp_path / "tuned")
    with torch.inference_mode():
        reloaded = load(tmp_path / "tuned")(**inputs).logits
    assert torch.allclose(reloaded, logits, atol=1e-6)
