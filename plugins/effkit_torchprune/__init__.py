"""One-shot structured pruning with torch-pruning: attention heads and FFN channels.

``OneShotPrune(ratio=0.5)`` removes half of every encoder layer's attention heads and half of its
feed-forward (FFN) intermediate channels in one step, ranking them by weight magnitude or by a
first-order Taylor estimate of the task loss. It keeps the hidden size, so the embeddings, every
LayerNorm, the pooler and the task head are untouched; a multiplexed model (``model.adapter``)
is pruned the same way, because its multiplexer and demultiplexer only see the hidden size.

The pruning happens in :meth:`OneShotPrune.apply`, so the stage's training after it is the
recovery fine-tune (``train.steps: 0`` prunes without recovery). torch-pruning builds the
dependency graph of the transformers base model (``BertModel``, ``RobertaModel``...): the query,
key and value rows of a head and the matching columns of the attention output projection are
removed together, and so are an FFN channel's row in the intermediate projection and its column
in the output projection.

The model stays an ordinary transformers model with smaller ``nn.Linear`` layers and corrected
per-layer attention attributes. Its saved ``config.json`` is the unpruned config: on load,
:meth:`OneShotPrune.rebuild` slices a freshly built model to the recorded heads and channels
(no torch-pruning, no data), and the saved weights then load strictly.
"""

from __future__ import annotations

import math
import random
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PrivateAttr, model_validator
from torch import nn

from effkit import EffkitModel, ModelError, ModelFacts, StageContext, Transform

__all__ = ["OneShotPrune", "count_parameters", "slice_linear"]

_EPS = 1e-9


def _parts(layer: nn.Module, index: int) -> tuple[Any, nn.Linear, nn.Linear, nn.Linear]:
    """(self-attention, attention output projection, FFN up projection, FFN down projection)."""
    paths = ("attention.self", "attention.output.dense", "intermediate.dense", "output.dense")
    try:
        attention, out, up, down = (layer.get_submodule(path) for path in paths)
    except AttributeError as exc:
        raise ModelError(
            f"encoder layer {index} ({type(layer).__name__}) is not a BERT-style layer "
            f"(attention.self.query/key/value, attention.output.dense, intermediate.dense, "
            f"output.dense): {exc}"
        ) from exc
    linears = (getattr(attention, "query", None), getattr(attention, "key", None),
               getattr(attention, "value", None), out, up, down)  # fmt: skip
    if not all(isinstance(linear, nn.Linear) for linear in linears):
        raise ModelError(f"encoder layer {index} has projections that are not nn.Linear")
    if not hasattr(attention, "attention_head_size"):
        raise ModelError(f"encoder layer {index}'s attention has no attention_head_size")
    assert isinstance(out, nn.Linear) and isinstance(up, nn.Linear)
    assert isinstance(down, nn.Linear)
    return attention, out, up, down


def _heads(attention: Any) -> int:
    return int(attention.query.out_features) // int(attention.attention_head_size)


def count_parameters(module: nn.Module) -> int:
    """Parameters of ``module`` (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


@torch.no_grad()
def slice_linear(
    linear: nn.Linear, rows: list[int] | None = None, cols: list[int] | None = None
) -> None:
    """Keep only ``rows`` (outputs) and ``cols`` (inputs) of ``linear``, in place."""
    weight: torch.Tensor = linear.weight
    bias: torch.Tensor | None = linear.bias
    if rows is not None:
        index = torch.as_tensor(rows, dtype=torch.long, device=weight.device)
        weight = weight.index_select(0, index)
        bias = bias.index_select(0, index) if bias is not None else None
        linear.out_features = len(rows)
    if cols is not None:
        index = torch.as_tensor(cols, dtype=torch.long, device=weight.device)
        weight = weight.index_select(1, index)
        linear.in_features = len(cols)
    linear.weight = nn.Parameter(weight.contiguous(), requires_grad=linear.weight.requires_grad)
    if bias is not None and linear.bias is not None:
        linear.bias = nn.Parameter(bias.contiguous(), requires_grad=linear.bias.requires_grad)


def _set_heads(attention: Any, heads: int) -> None:
    """Make the transformers attention module agree with its pruned projections."""
    size = int(attention.attention_head_size)
    attention.num_attention_heads = heads
    attention.all_head_size = heads * size


class OneShotPrune(Transform):
    """Remove a share of every layer's attention heads and FFN channels in one step."""

    ratio: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="Share of each layer's heads and FFN channels removed (heads removed are "
        "rounded up, at least one head is kept).",
    )  # fmt: skip
    importance: Literal["magnitude", "taylor"] = Field(
        "magnitude",
        description="Ranking: group L2 weight magnitude, or |w * dL/dw| accumulated over "
        "calibration batches of the task loss (needs the stage's data).",
    )
    prune_heads: bool = Field(True, description="Remove whole attention heads.")
    prune_ffn: bool = Field(True, description="Remove FFN intermediate channels.")
    round_to: int = Field(
        8, ge=1,
        description="Kept FFN widths are rounded down to a multiple of this (never below it).",
    )  # fmt: skip
    calibration_batches: int = Field(
        4, ge=1, description="Training batches whose gradients rank weights for taylor."
    )

    CALIBRATION_BATCH_SIZE: ClassVar[int] = 16

    _layers: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _parameters: dict[str, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _something_to_prune(self) -> OneShotPrune:
        if not (self.prune_heads or self.prune_ffn):
            raise ValueError("prune_heads and prune_ffn are both false: nothing would be pruned")
        return self

    def check(self, facts: ModelFacts) -> None:
        facts.require_encoder("oneshot-prune", bert_layers=True)

    # ------------------------------------------------------------------ targets

    def heads_kept(self, heads: int) -> int:
        """Heads a layer with ``heads`` heads keeps."""
        if not self.prune_heads or heads <= 1:
            return heads
        removed = math.ceil(self.ratio * heads - _EPS)
        return max(1, heads - removed)

    def ffn_kept(self, width: int) -> int:
        """FFN channels a layer of ``width`` channels keeps."""
        if not self.prune_ffn or width <= 1:
            return width
        kept = int(width * (1.0 - self.ratio) + _EPS)
        if kept >= width:
            return width
        if self.round_to > 1:
            kept -= kept % self.round_to
            kept = max(kept, min(width, self.round_to))
        return max(1, min(width, kept))

    # ------------------------------------------------------------------ apply

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        import torch_pruning as tp

        if ctx.rebuilding:
            return self.rebuild(model, ctx)
        base = model.base
        layers = list(base.encoder.layer)
        parts = [_parts(layer, i) for i, layer in enumerate(layers)]
        before_total = model.num_parameters()
        before_encoder = count_parameters(base.encoder)
        batches = self._calibration_batches(model, ctx)

        modes = {module: module.training for module in model.modules()}
        grads = {name: p.requires_grad for name, p in model.named_parameters()}
        try:
            for param in model.parameters():
                param.requires_grad_(True)
            if self.importance == "taylor":
                self._accumulate_gradients(model, batches)
                importance: Any = tp.importance.GroupTaylorImportance()
            else:
                importance = tp.importance.GroupMagnitudeImportance(p=2)

            # Only the query/key/value and FFN up projections root a group; everything that
            # outputs the hidden size is ignored, so the hidden-size group is never pruned.
            roots: set[nn.Module] = set()
            num_heads: dict[nn.Module, int] = {}
            head_ratios: dict[nn.Module, float] = {}
            ffn_ratios: dict[nn.Module, float] = {}
            targets: list[tuple[int, int]] = []
            for attention, _, up, _ in parts:
                heads, width = _heads(attention), int(up.out_features)
                keep_heads, keep_ffn = self.heads_kept(heads), self.ffn_kept(width)
                targets.append((keep_heads, keep_ffn))
                qkv = (attention.query, attention.key, attention.value)
                for linear in qkv:
                    num_heads[linear] = heads
                if keep_heads < heads:
                    roots.update(qkv)
                    # torch-pruning removes ceil(r * heads) heads; aim at the middle of the step
                    head_ratios[attention] = (heads - keep_heads - 0.5) / heads
                if keep_ffn < width:
                    roots.add(up)
                    # torch-pruning keeps int(width * (1 - r)) channels
                    ffn_ratios[up] = 1.0 - (keep_ffn + 0.5) / width
            if not roots:
                self._record(model, base, parts, before_total, before_encoder, {})
                return model
            ignored = [m for m in base.modules() if _prunable(m) and m not in roots]
            real = set(base.modules())  # group members that are modules, not traced ops
            inputs = {k: v for k, v in batches[0].items() if k != "labels"}
            with torch.enable_grad():  # the dependency graph is traced through autograd
                pruner = tp.pruner.BasePruner(
                    base,
                    inputs,
                    importance=importance,
                    global_pruning=False,
                    # attention groups need a positive width ratio for their head step to run;
                    # prune_head_dims=False keeps every head's size, so only whole heads go
                    pruning_ratio=0.5,
                    pruning_ratio_dict=ffn_ratios,
                    ignored_layers=ignored,
                    round_to=None,  # widths are computed here (ffn_kept), rounding included
                    num_heads=num_heads,
                    prune_num_heads=True,
                    prune_head_dims=False,
                    head_pruning_ratio=0.0,
                    head_pruning_ratio_dict=head_ratios,
                    output_transform=_last_hidden,
                    # fresh dicts: torch-pruning updates these arguments in place, and their
                    # defaults are shared by every pruner
                    in_channel_groups={},
                    out_channel_groups={},
                )
            removed: dict[nn.Module, list[int]] = {}
            for group in pruner.step(interactive=True):
                for dep, idxs in group:
                    target = dep.target.module
                    if target in real and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                        removed.setdefault(target, []).extend(int(i) for i in idxs)
                with torch.no_grad():
                    group.prune()
        finally:
            for module, mode in modes.items():
                module.training = mode
            for name, param in model.named_parameters():
                param.requires_grad_(grads.get(name, True))
                param.grad = None

        for (attention, _, _, _), (keep_heads, _) in zip(parts, targets, strict=True):
            _set_heads(attention, keep_heads)
        self._record(model, base, parts, before_total, before_encoder, removed, targets)
        return model

    def _record(
        self,
        model: EffkitModel,
        base: Any,
        parts: list[tuple[Any, nn.Linear, nn.Linear, nn.Linear]],
        before_total: int,
        before_encoder: int,
        removed: dict[nn.Module, list[int]],
        targets: list[tuple[int, int]] | None = None,
    ) -> None:
        """Turn the channels torch-pruning removed into kept heads and channels per layer."""
        records = []
        for i, (attention, _, up, _) in enumerate(parts):
            size = int(attention.attention_head_size)
            dropped = sorted(set(removed.get(attention.query, [])))
            heads_before = (int(attention.query.out_features) + len(dropped)) // size
            for other in (attention.key, attention.value):
                if sorted(set(removed.get(other, []))) != dropped:
                    raise ModelError(
                        f"oneshot-prune: torch-pruning removed different channels from layer "
                        f"{i}'s query, key and value projections"
                    )
            heads_dropped = sorted({c // size for c in dropped})
            if len(dropped) != len(heads_dropped) * size:
                raise ModelError(f"oneshot-prune: layer {i} lost part of a head, not whole heads")
            ffn_dropped = set(removed.get(up, []))
            ffn_before = int(up.out_features) + len(ffn_dropped)
            record: dict[str, Any] = {
                "heads": [h for h in range(heads_before) if h not in set(heads_dropped)],
                "num_heads": heads_before,
                "head_size": size,
                "ffn": [c for c in range(ffn_before) if c not in ffn_dropped],
                "ffn_width": ffn_before,
            }
            if len(record["heads"]) != _heads(attention) or len(record["ffn"]) != up.out_features:
                raise ModelError(f"oneshot-prune: layer {i}'s recorded shapes do not match it")
            if targets is not None and (len(record["heads"]), len(record["ffn"])) != targets[i]:
                raise ModelError(
                    f"oneshot-prune: layer {i} kept {len(record['heads'])} heads and "
                    f"{len(record['ffn'])} FFN channels, expected {targets[i][0]} and "
                    f"{targets[i][1]}"
                )
            records.append(record)
        self._layers = records
        self._parameters = {
            "encoder_before": before_encoder,
            "encoder_after": count_parameters(base.encoder),
            "total_before": before_total,
            "total_after": model.num_parameters(),
        }

    # ------------------------------------------------------------------ calibration

    def _calibration_batches(
        self, model: EffkitModel, ctx: StageContext
    ) -> list[dict[str, torch.Tensor]]:
        """Task batches from the train split; random token ids (magnitude only) without data."""
        device = model.device
        train = (ctx.data.splits.get("train") or []) if ctx.data is not None else []
        if self.importance == "taylor" and not train:
            raise ModelError(
                "oneshot-prune: importance 'taylor' needs the task's training data to compute "
                "gradients",
                hint="run it in a stage with data, or use importance: magnitude",
            )
        if not train:
            vocab = model.vocab_size
            low = 1000 if vocab > 1000 else 0
            generator = torch.Generator().manual_seed(ctx.seed)
            ids = torch.randint(low, vocab, (2, min(ctx.max_length, 32)), generator=generator)
            return [
                {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
            ]
        from effkit import Collator, encode

        assert ctx.data is not None
        if ctx.tokenizer is None:
            raise ModelError("oneshot-prune needs the model's tokenizer to encode its data")
        size = self.CALIBRATION_BATCH_SIZE
        count = self.calibration_batches if self.importance == "taylor" else 1
        picked = random.Random(ctx.seed).sample(train, min(len(train), count * size))
        features = encode(picked, ctx.tokenizer, ctx.data.task, ctx.max_length)
        pad = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else 0
        collate = Collator(pad)
        keys = ("input_ids", "attention_mask", "token_type_ids", "labels")
        batches = []
        for start in range(0, len(features), size):
            batch = collate(features[start : start + size])
            batches.append({k: v.to(device) for k, v in batch.items() if k in keys})
        return batches

    @staticmethod
    def _accumulate_gradients(model: EffkitModel, batches: list[dict[str, torch.Tensor]]) -> None:
        """Sum the task loss's gradients over the calibration batches (dropout off)."""
        model.eval()
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            for batch in batches:
                labels = batch["labels"]
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                logits = model(**inputs).logits
                loss = nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
                )
                loss.backward()

    # ------------------------------------------------------------------ saved structure

    def describe(self) -> dict[str, Any]:
        layers = self._layers
        return {
            "ratio": self.ratio,
            "importance": self.importance,
            "heads_before": [r["num_heads"] for r in layers],
            "heads_after": [len(r["heads"]) for r in layers],
            "ffn_before": [r["ffn_width"] for r in layers],
            "ffn_after": [len(r["ffn"]) for r in layers],
            "encoder_parameters_before": self._parameters.get("encoder_before"),
            "encoder_parameters_after": self._parameters.get("encoder_after"),
            "parameters_before": self._parameters.get("total_before"),
            "parameters_after": self._parameters.get("total_after"),
        }

    def kept(self) -> list[dict[str, list[int]]]:
        """Per layer, the kept head indices and the kept FFN channel indices."""
        return [{"heads": list(r["heads"]), "ffn": list(r["ffn"])} for r in self._layers]

    def state(self) -> dict[str, Any]:
        return {"layers": [dict(r) for r in self._layers], "parameters": dict(self._parameters)}

    def load_state(self, state: dict[str, Any]) -> None:
        layers = state.get("layers")
        if not isinstance(layers, list) or not layers:
            raise ModelError("oneshot-prune: the saved state has no per-layer record")
        for i, record in enumerate(layers):
            missing = {"heads", "num_heads", "head_size", "ffn", "ffn_width"} - set(record)
            if missing:
                raise ModelError(f"oneshot-prune: saved layer {i} lacks {sorted(missing)}")
        self._layers = [dict(r) for r in layers]
        self._parameters = {k: int(v) for k, v in dict(state.get("parameters", {})).items()}

    def rebuild(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Slice a freshly built model to the recorded heads and FFN channels (no data)."""
        if not self._layers:
            raise ModelError("oneshot-prune: nothing recorded to rebuild (load_state first)")
        base = model.base
        layers = list(base.encoder.layer)
        if len(layers) != len(self._layers):
            raise ModelError(
                f"oneshot-prune: the saved model pruned {len(self._layers)} layers, but the "
                f"rebuilt model has {len(layers)}"
            )
        for i, (layer, record) in enumerate(zip(layers, self._layers, strict=True)):
            attention, out, up, down = _parts(layer, i)
            size = int(record["head_size"])
            if size != int(attention.attention_head_size) or _heads(attention) != int(
                record["num_heads"]
            ):
                raise ModelError(
                    f"oneshot-prune: layer {i} has {_heads(attention)} heads of size "
                    f"{attention.attention_head_size}; the saved model pruned "
                    f"{record['num_heads']} heads of size {size}"
                )
            if int(up.out_features) != int(record["ffn_width"]):
                raise ModelError(
                    f"oneshot-prune: layer {i}'s FFN is {up.out_features} wide; the saved model "
                    f"pruned one of {record['ffn_width']}"
                )
            heads = [int(h) for h in record["heads"]]
            if len(heads) < _heads(attention):
                rows = [h * size + j for h in heads for j in range(size)]
                for linear in (attention.query, attention.key, attention.value):
                    slice_linear(linear, rows=rows)
                slice_linear(out, cols=rows)
                _set_heads(attention, len(heads))
            ffn = [int(c) for c in record["ffn"]]
            if len(ffn) < int(up.out_features):
                slice_linear(up, rows=ffn)
                slice_linear(down, cols=ffn)
        return model


def _prunable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm, nn.Conv1d, nn.Conv2d))


def _last_hidden(output: Any) -> torch.Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if hidden is not None else output[0]
