"""Reading the MUX-PLMs checkpoints the paper's authors released (MUX-BERT, MUX-ELECTRA).

A folder (or hub repository, e.g. ``princeton-nlp/muxbert_base_gaussian_hadamard_index_pos_5``)
holding the authors' ``config.json`` (a BERT or ELECTRA config with ``num_instances``,
``muxing_variant`` and ``demuxing_variant``) and their weights (``pytorch_model.bin``, read with
``weights_only=True``, or ``model.safetensors``) becomes an effkit model that is that checkpoint:
a plain transformers ``BertModel`` / ``ElectraModel`` encoder under effkit's task head, wrapped by
the ``multiplex`` transform in the ``mux-plms`` layout (:mod:`effkit_mux.datamux`) with the
checkpoint's N, variants and demultiplexer depth, and every weight the checkpoint holds loaded:
instance keys, the RSA demultiplexer, the contextual layers, the retrieval / MLM head, the
ELECTRA discriminator and a fine-tuned classifier. docs/released.md has the full mapping.

:class:`MuxPlmsCheckpoint` is registered under the ``effkit.checkpoints`` entry-point group
(:mod:`effkit.foreign`), which is how ``model.source`` and the preflight find it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from effkit import EffkitModel, ModelError, Task, stack

log = logging.getLogger(__name__)

MUX_FIELDS = (
    "num_instances", "muxing_variant", "demuxing_variant", "retrieval_percentage",
    "gaussian_hadamard_norm", "binary_hadamard_epsilon", "retrieval_loss_coeff",
    "task_loss_coeff", "learn_muxing", "num_hidden_demux_layers", "architectures",
)  # fmt: skip
"""Fields of the authors' config that belong to their model class, not to the encoder."""
MUX_VARIANTS = {"gaussian_hadamard": "gaussian", "gaussian_attention_v2": "contextual"}
DEMUX_VARIANTS = {"index_pos": "rsa"}
FAMILIES = ("bert", "electra")
CONTEXTUAL_LAYER = {
    "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
    "attention.output.dense": "attention_out", "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "ffn_in", "output.dense": "ffn_out", "output.LayerNorm": "ffn_norm",
}  # fmt: skip
"""The authors' ``ElectraLayer`` parts -> :class:`~effkit_mux.datamux.BertStyleLayer`'s."""
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _where(config: dict[str, Any]) -> str:
    return str(config.get("_name_or_path") or "the checkpoint's config.json")


def multiplex_config(config: dict[str, Any]) -> dict[str, Any]:
    """The ``multiplex`` transform's fields for an authors' config; a ModelError if unsupported."""
    family = config.get("model_type")
    mux = str(config.get("muxing_variant"))
    demux = str(config.get("demuxing_variant"))
    known = f"effkit reads muxing_variant {' or '.join(MUX_VARIANTS)} with demuxing_variant " \
        f"{' or '.join(DEMUX_VARIANTS)}, on {' or '.join(FAMILIES)} encoders"  # fmt: skip
    if family not in FAMILIES:
        raise ModelError(f"MUX-PLMs checkpoint of model_type '{family}': {known}",
                         where=_where(config))  # fmt: skip
    if mux not in MUX_VARIANTS or demux not in DEMUX_VARIANTS:
        raise ModelError(f"MUX-PLMs checkpoint with muxing_variant '{mux}' and demuxing_variant "
                         f"'{demux}': {known}", where=_where(config))  # fmt: skip
    if family == "electra" and MUX_VARIANTS[mux] == "contextual":
        raise ModelError(f"muxing_variant '{mux}' exists for MUX-BERT only: {known}",
                         where=_where(config))  # fmt: skip
    try:
        n, depth = int(config["num_instances"]), int(config.get("num_hidden_demux_layers", 2))
    except (KeyError, TypeError, ValueError):
        raise ModelError("num_instances and num_hidden_demux_layers must be integers",
                         where=_where(config)) from None  # fmt: skip
    return {"n": n, "mux": MUX_VARIANTS[mux], "demux": DEMUX_VARIANTS[demux],
            "demux_depth": depth, "layout": "mux-plms"}  # fmt: skip


def encoder_config(config: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The plain transformers config of the checkpoint's encoder, with ``overrides`` set."""
    from transformers import AutoConfig

    fields = {k: v for k, v in config.items() if k not in MUX_FIELDS and not k.startswith("_")}
    for name in ("id2label", "label2id", "transformers_version"):
        fields.pop(name, None)
    model_type = str(fields.pop("model_type"))
    return AutoConfig.for_model(model_type, **{**fields, **overrides})


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (safetensors first; a pickle only with ``weights_only=True``)."""
    found = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not found:
        raise ModelError(f"'{folder}' holds no weights ({' or '.join(WEIGHT_FILES)})")
    path = found[0]
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file
        raise ModelError(f"cannot read the weights '{path}': {' '.join(str(exc).split())}",
                         hint="download the checkpoint again") from None  # fmt: skip
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"'{path}' is not a state dict of tensors")
    return data


def _strip_wrapper(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ELECTRA pre-training wrapper's discriminator, when the file holds the wrapper."""
    if any(k.startswith("discriminator.") for k in weights):
        return {k.removeprefix("discriminator."): v for k, v in weights.items()
                if k.startswith("discriminator.")}  # fmt: skip
    return weights


def _target(key: str, family: str, head_fits: bool) -> str | None:
    """effkit's name for one of the authors' weights; "" to skip it; None if unknown."""
    if key in (f"{family}.embeddings.position_ids",) or key.startswith(f"{family}.pooler."):
        return ""  # a buffer transformers 5 rebuilds; the pooler the authors' classes drop
    if key.startswith(("demultiplexer.demux_module.", "retrieval_head.demux_module.")):
        return ""  # the same shared module, saved once per owner
    if key.startswith(f"{family}."):
        return f"hf.{key}"
    if key == "instance_embedding":
        return "adapter.multiplexer.keys"
    if key == "demux_module.demux_instance_embedding":
        return "adapter.demultiplexer.keys"
    if m := re.fullmatch(r"demux_module\.(dense|layer_norm)_(\d+)\.(weight|bias)", key):
        part = "dense" if m[1] == "dense" else "norms"
        return f"adapter.demultiplexer.{part}.{int(m[2]) - 1}.{m[3]}"
    if m := re.fullmatch(r"muxing_attention(_2)?\.(.+)\.(weight|bias)", key):
        inner = CONTEXTUAL_LAYER.get(m[2])
        side = "across" if m[1] else "within"
        return None if inner is None else f"adapter.multiplexer.{side}.{inner}.{m[3]}"
    simple = {
        "demultiplexer.pre_decoder": "adapter.demultiplexer.task_out",
        "demultiplexer.pre_decoder_layer_norm": "adapter.demultiplexer.task_norm",
        "retrieval_head.pre_decoder": "adapter.lm_head.dense",
        "retrieval_head.pre_decoder_layer_norm": "adapter.lm_head.norm",
        "discriminator_predictions.dense": "adapter.electra_head.net.0",
        "discriminator_predictions.dense_prediction": "adapter.electra_head.net.2",
    }
    stem, _, leaf = key.rpartition(".")
    if stem in simple and leaf in ("weight", "bias"):
        return f"{simple[stem]}.{leaf}"
    if key in ("retrieval_head.bias", "retrieval_head.decoder.bias"):
        return "adapter.lm_head.decoder.bias"
    if key == "retrieval_head.decoder.weight":  # MUX-BERT ties it to the word embeddings
        return "" if family == "bert" else "adapter.lm_head.decoder.weight"
    if key.startswith("classifier."):
        return f"hf.{key}" if head_fits else ""
    return None


def _head_fits(config: dict[str, Any], task: Task) -> bool:
    """Whether the checkpoint's classifier (if any) was trained for this kind of task."""
    names = " ".join(str(a) for a in config.get("architectures") or [])
    kind = "TokenClassification" if task.type == "token-classification" else "Sequence"
    return kind in names


def map_weights(
    weights: dict[str, torch.Tensor], family: str, head_fits: bool, where: str
) -> dict[str, torch.Tensor]:
    """The checkpoint's weights under effkit's names; a ModelError for keys it cannot place."""
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in _strip_wrapper(weights).items():
        name = _target(key, family, head_fits)
        if name is None:
            unknown.append(key)
        elif name:
            mapped[name] = value
    if unknown:
        raise ModelError(
            f"{len(unknown)} weights of the checkpoint belong to no part of the MUX-PLMs "
            f"{family} layout: {', '.join(sorted(unknown)[:5])}", where=where,
            hint="the file is not a released MUX-PLMs checkpoint, or of a variant effkit "
            "does not read (docs/released.md)",
        )  # fmt: skip
    return mapped


def load_weights(model: EffkitModel, mapped: dict[str, torch.Tensor], where: str) -> None:
    """Load ``mapped`` into ``model``; a ModelError naming missing, extra or misshapen weights."""
    target = model.state_dict()
    tied = {"adapter.lm_head.decoder.weight"} if model.config.model_type == "bert" else set()
    fresh = {k for k in target if k.startswith("hf.classifier.")} - set(mapped)
    extra = sorted(set(mapped) - set(target))
    missing = sorted(set(target) - set(mapped) - tied - fresh)
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(target[k].shape)})"
             for k, v in mapped.items() if k in target and v.shape != target[k].shape]  # fmt: skip
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:4])})")
    if extra:
        problems.append(f"{len(extra)} not in its layout ({', '.join(extra[:4])})")
    if wrong:
        problems.append(f"{len(wrong)} of another shape ({'; '.join(wrong[:3])})")
    if problems:
        raise ModelError(
            f"the checkpoint's weights do not fit the layout its config describes: "
            f"{'; '.join(problems)}", where=where,
            hint="check num_instances and num_hidden_demux_layers in config.json against the "
            "weights, or download the checkpoint again",
        )  # fmt: skip
    model.load_state_dict(mapped, strict=False)
    if fresh:
        log.info("%s: the task head is new (the checkpoint has none for this task)", where)


class MuxPlmsCheckpoint:
    """The ``effkit.checkpoints`` reader of the released MUX-PLMs checkpoints."""

    @staticmethod
    def claims(config: dict[str, Any]) -> bool:
        return all(k in config for k in ("num_instances", "muxing_variant", "demuxing_variant"))

    @staticmethod
    def history(config: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": "multiplex", "config": multiplex_config(config)}]

    @staticmethod
    def load(
        folder: Path, config: dict[str, Any], *, task: Task, tokenizer: Any, source: str,
        overrides: dict[str, Any],
    ) -> EffkitModel:  # fmt: skip
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

        from . import Multiplex

        where = str(source)
        spec = multiplex_config({**config, "_name_or_path": where})
        weights = read_weights(Path(folder))
        family = str(config["model_type"])
        mapped = map_weights(weights, family, _head_fits(config, task), where)
        hf_config = encoder_config(config, overrides)
        token = task.type == "token-classification"
        auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        model = EffkitModel(auto.from_config(hf_config), tokenizer, task, source)
        try:
            transform = Multiplex.model_validate(spec)
        except ValueError as exc:
            raise ModelError(f"the checkpoint's multiplexing does not validate: {exc}",
                             where=where) from None  # fmt: skip
        transform.load_state({
            "vocab": any(k.startswith("adapter.lm_head.") for k in mapped),
            "electra": any(k.startswith("adapter.electra_head.") for k in mapped),
        })  # fmt: skip
        model = stack(model, [transform])
        load_weights(model, mapped, where)
        return model.eval()
