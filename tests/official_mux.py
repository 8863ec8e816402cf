"""A plain-torch port of the MUX-PLMs authors' forward passes, and tiny checkpoints in their layout.

Written from a reading of princeton-nlp/datamux-pretraining (``multiplexing_pretraining_bert.py``,
``multiplexing_pretraining_electra.py``, ``multiplexing_pretraining_utils.py``, transformers 4.4's
BERT and ELECTRA modules), independently of effkit's modules: every function reads the authors'
state-dict names and computes what their classes compute in eval mode, quirks included:

- the embeddings run twice: once on the token ids, and again on the multiplexed embeddings
  (the encoder is called with ``inputs_embeds``, which adds position and segment-0 embeddings
  and a LayerNorm once more);
- the encoder gets no attention mask (padding is attended); the classifiers drop segment ids;
- BERT's classifiers put token 101 at position 0 (``index_pos``);
- a batch that is not a multiple of N is filled with rows drawn at random (ids and masks drawn
  independently), whose outputs are cut off;
- the demultiplexer of the task heads applies dropout where a LayerNorm was meant, so its first
  layer has no LayerNorm; its last trunk layer is unused.

:func:`checkpoint` builds random weights under the authors' key names (shared modules saved
under each owner, the position-id buffer, the tied decoder) and :func:`write` saves them as
``config.json`` plus ``pytorch_model.bin`` or ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]
CLS = 101


# ------------------------------------------------------------------ building blocks


def _linear(x: torch.Tensor, sd: State, p: str) -> torch.Tensor:
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def _norm(x: torch.Tensor, sd: State, p: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def extended(mask: torch.Tensor) -> torch.Tensor:
    """transformers 4.4's additive mask ``[R, 1, 1, L]``: 0 kept, -10000 padding."""
    return (1.0 - mask[:, None, None, :].float()) * -10000.0


def bert_layer(x: torch.Tensor, sd: State, p: str, cfg: dict[str, Any],
               additive: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """A BertLayer / ElectraLayer (post-LayerNorm attention and GELU FFN)."""
    heads, eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]
    rows, length, width = x.shape
    size = width // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(rows, length, heads, size).permute(0, 2, 1, 3)

    q = split(_linear(x, sd, p + ".attention.self.query"))
    k = split(_linear(x, sd, p + ".attention.self.key"))
    v = split(_linear(x, sd, p + ".attention.self.value"))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(size)
    if additive is not None:
        scores = scores + additive
    ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3)
    ctx = ctx.reshape(rows, length, width)
    att = _norm(_linear(ctx, sd, p + ".attention.output.dense") + x, sd,
                p + ".attention.output.LayerNorm", eps)  # fmt: skip
    mid = F.gelu(_linear(att, sd, p + ".intermediate.dense"))
    return _norm(_linear(mid, sd, p + ".output.dense") + att, sd, p + ".output.LayerNorm", eps)


def embeddings(sd: State, cfg: dict[str, Any], ids: torch.Tensor | None = None,
               inputs_embeds: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """BertEmbeddings / ElectraEmbeddings: word (or given) + segment + position, LayerNorm."""
    p = f"{cfg['model_type']}.embeddings"
    x = sd[p + ".word_embeddings.weight"][ids] if inputs_embeds is None else inputs_embeds
    length = x.shape[1]
    types = torch.zeros(x.shape[:2], dtype=torch.long) if token_type_ids is None else token_type_ids
    x = x + sd[p + ".token_type_embeddings.weight"][types]
    x = x + sd[p + ".position_embeddings.weight"][:length][None]
    return _norm(x, sd, p + ".LayerNorm", cfg["layer_norm_eps"])


def encoder(sd: State, cfg: dict[str, Any], inputs_embeds: torch.Tensor) -> torch.Tensor:
    """``BertModel(inputs_embeds=x, attention_mask=None)``: embeddings again, then the layers."""
    family = cfg["model_type"]
    x = embeddings(sd, cfg, inputs_embeds=inputs_embeds)
    if f"{family}.embeddings_project.weight" in sd:
        x = _linear(x, sd, f"{family}.embeddings_project")
    for i in range(cfg["num_hidden_layers"]):
        x = bert_layer(x, sd, f"{family}.encoder.layer.{i}", cfg)
    return x


# ------------------------------------------------------------------ multiplexing


def multiplex(sd: State, cfg: dict[str, Any], emb: torch.Tensor, mask: torch.Tensor,
              mask_across: bool) -> torch.Tensor:  # fmt: skip
    """The multiplexed embeddings ``[B/N, L, E]`` of instance embeddings ``[B, L, E]``."""
    n = cfg["num_instances"]
    rows, length, width = emb.shape
    keys = sd["instance_embedding"][:n]
    if cfg["muxing_variant"] == "gaussian_hadamard":
        return (emb.view(rows // n, n, length, width) * keys[None, :, None, :]).mean(dim=1)
    assert cfg["muxing_variant"] == "gaussian_attention_v2"
    first = bert_layer(emb, sd, "muxing_attention", cfg, extended(mask)) + emb
    keyed = first.view(rows // n, n, length, width) * keys[None, :, None, :]
    across_in = keyed.permute(0, 2, 1, 3).reshape(-1, n, width)
    additive = None
    if mask_across:  # the sequence classifier's version
        additive = extended(mask.view(rows // n, n, length).permute(0, 2, 1).reshape(-1, n))
    second = bert_layer(across_in, sd, "muxing_attention_2", cfg, additive)
    second = second.view(-1, length, n, width).permute(0, 2, 1, 3)
    return (second + keyed).mean(dim=1)


def _trunk_input(sd: State, h: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``dense_1([key, h])``."""
    return _linear(torch.cat([keys, h], dim=-1), sd, "demux_module.dense_1")


def task_demux(sd: State, cfg: dict[str, Any], h: torch.Tensor) -> torch.Tensor:
    """IndexPosDemultiplexerTokenLevel: ``[G, L, H]`` -> ``[G * N, L, H]``."""
    n, depth = cfg["num_instances"], cfg.get("num_hidden_demux_layers", 2)
    g, length, width = h.shape
    keys = sd["demux_module.demux_instance_embedding"][None, :, None, :].expand(g, n, length, width)
    x = F.gelu(_trunk_input(sd, h[:, None].expand(g, n, length, width), keys))
    x = x.reshape(g * n, length, width)
    for i in range(2, depth):  # dense_2 .. dense_{depth-1}, each with a residual
        x = F.gelu(_linear(x, sd, f"demux_module.dense_{i}")) + x
    y = _norm(F.gelu(_linear(x, sd, "demultiplexer.pre_decoder")), sd,
              "demultiplexer.pre_decoder_layer_norm", cfg["layer_norm_eps"])  # fmt: skip
    return y + x


def retrieval(
    sd: State, cfg: dict[str, Any], h: torch.Tensor, instance: torch.Tensor
) -> torch.Tensor:
    """The retrieval head's vocabulary logits ``[G, L, V]`` for instance ``instance[g, l]``."""
    eps, depth = cfg["layer_norm_eps"], cfg.get("num_hidden_demux_layers", 2)
    keys = sd["demux_module.demux_instance_embedding"][instance]
    x = _norm(F.gelu(_trunk_input(sd, h, keys)), sd, "demux_module.layer_norm_1", eps)
    if cfg["model_type"] == "bert":  # RetrievalHeadIndexPosDemultiplexingBERT
        x = _norm(F.gelu(_linear(x, sd, "demux_module.dense_2")), sd, "demux_module.layer_norm_2",
                  eps)  # fmt: skip
        x = _norm(F.gelu(_linear(x, sd, "retrieval_head.pre_decoder")), sd,
                  "retrieval_head.pre_decoder_layer_norm", eps)  # fmt: skip
        return _linear(x, sd, "retrieval_head.decoder")
    for i in range(2, depth + 1):  # RetrievalHeadIndexPosDemultiplexing (ELECTRA)
        x = _norm(F.gelu(_linear(x, sd, f"demux_module.dense_{i}")), sd,
                  f"demux_module.layer_norm_{i}", eps) + x  # fmt: skip
    y = _norm(F.gelu(_linear(x, sd, "retrieval_head.pre_decoder")), sd,
              "retrieval_head.pre_decoder_layer_norm", eps) + x  # fmt: skip
    return F.linear(y, sd["retrieval_head.decoder.weight"], sd["retrieval_head.bias"])


# ------------------------------------------------------------------ whole models


def _filled(ids: torch.Tensor, mask: torch.Tensor, n: int, seed: int) -> tuple[Any, Any, int]:
    """A batch made a multiple of N with randomly drawn rows, as the classifiers do."""
    extra = (-ids.shape[0]) % n
    if not extra:
        return ids, mask, 0
    gen = torch.Generator().manual_seed(seed)
    pick_ids = torch.randint(0, ids.shape[0], (extra,), generator=gen)
    pick_mask = torch.randint(0, ids.shape[0], (extra,), generator=gen)
    return torch.cat([ids, ids[pick_ids]]), torch.cat([mask, mask[pick_mask]]), extra


def classify(sd: State, cfg: dict[str, Any], ids: torch.Tensor, mask: torch.Tensor,
             task: str, seed: int = 0) -> torch.Tensor:  # fmt: skip
    """MuxedBert/ElectraFor{Sequence,Token}Classification's logits (segment ids dropped)."""
    family = cfg["model_type"]
    ids, mask, extra = _filled(ids, mask, cfg["num_instances"], seed)
    if family == "bert":
        ids = ids.clone()
        ids[:, 0] = CLS
    emb = embeddings(sd, cfg, ids)
    mixed = multiplex(sd, cfg, emb, mask, mask_across=task == "sequence")
    h = encoder(sd, cfg, mixed)
    if task == "sequence":
        states = task_demux(sd, cfg, h[:, :1])[:, 0]
        if family == "bert":
            logits = _linear(states, sd, "classifier")
        else:  # ElectraClassificationHead
            logits = _linear(F.gelu(_linear(states, sd, "classifier.dense")), sd,
                             "classifier.out_proj")  # fmt: skip
    else:
        logits = _linear(task_demux(sd, cfg, h), sd, "classifier")
    return logits[: logits.shape[0] - extra]


def hidden(sd: State, cfg: dict[str, Any], ids: torch.Tensor, mask: torch.Tensor,
           token_type_ids: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The pre-training models' multiplexed encoder output ``[B/N, L, H]`` (B a multiple of N)."""
    ids = ids.clone()
    ids[:, 0] = CLS
    emb = embeddings(sd, cfg, ids, token_type_ids=token_type_ids)
    return encoder(sd, cfg, multiplex(sd, cfg, emb, mask, mask_across=False))


def discriminator(sd: State, cfg: dict[str, Any], h: torch.Tensor) -> torch.Tensor:
    """MUX-ELECTRA's replaced-token logits ``[B, L]`` on every demultiplexed position."""
    x = F.gelu(_linear(task_demux(sd, cfg, h), sd, "discriminator_predictions.dense"))
    return _linear(x, sd, "discriminator_predictions.dense_prediction").squeeze(-1)


# ------------------------------------------------------------------ tiny checkpoints


def config(family: str, mux: str, n: int, *, depth: int = 3, labels: int = 3,
           architecture: str = "SequenceClassification") -> dict[str, Any]:  # fmt: skip
    """A tiny config in the authors' format (their fields on a transformers 4.x config)."""
    name = "Bert" if family == "bert" else "Electra"
    cfg: dict[str, Any] = {
        "architectures": [f"Muxed{name}For{architecture}"], "model_type": family,
        "vocab_size": 128, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 48, "max_position_embeddings": 32, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "pad_token_id": 0, "transformers_version": "4.4.2",
        "id2label": {str(i): f"LABEL_{i}" for i in range(labels)},
        "label2id": {f"LABEL_{i}": i for i in range(labels)},
        "num_instances": n, "muxing_variant": mux, "demuxing_variant": "index_pos",
        "num_hidden_demux_layers": depth, "gaussian_hadamard_norm": 1, "learn_muxing": 0,
        "retrieval_loss_coeff": 0.1, "task_loss_coeff": 0.9, "retrieval_percentage": 1.0,
        "binary_hadamard_epsilon": 0,
    }  # fmt: skip
    if family == "electra":
        cfg["embedding_size"] = 32
    return cfg


def _lin(p: str, out: int, inp: int) -> dict[str, tuple[int, ...]]:
    """A linear layer's (or, with ``inp`` 0, a LayerNorm's) weight and bias shapes."""
    return {f"{p}.weight": (out, inp) if inp else (out,), f"{p}.bias": (out,)}


def _layer_shapes(p: str, width: int, mid: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for part in ("query", "key", "value"):
        shapes |= _lin(f"{p}.attention.self.{part}", width, width)
    shapes |= _lin(f"{p}.attention.output.dense", width, width)
    shapes |= _lin(f"{p}.intermediate.dense", mid, width) | _lin(f"{p}.output.dense", width, mid)
    return (
        shapes
        | _lin(f"{p}.attention.output.LayerNorm", width, 0)
        | _lin(f"{p}.output.LayerNorm", width, 0)
    )


def checkpoint(
    cfg: dict[str, Any], *, heads: tuple[str, ...] = ("classifier", "retrieval"), seed: int = 0
) -> State:
    """Random weights under the authors' key names for ``cfg`` (one of :func:`config`'s)."""
    family, n, h = cfg["model_type"], cfg["num_instances"], cfg["hidden_size"]
    vocab, mid, depth = cfg["vocab_size"], cfg["intermediate_size"], cfg["num_hidden_demux_layers"]
    labels = len(cfg["id2label"])
    e = f"{family}.embeddings"
    shapes: dict[str, tuple[int, ...]] = {
        f"{e}.word_embeddings.weight": (vocab, h), f"{e}.token_type_embeddings.weight": (2, h),
        f"{e}.position_embeddings.weight": (cfg["max_position_embeddings"], h),
        "instance_embedding": (n, h), "demux_module.demux_instance_embedding": (n, h),
    }  # fmt: skip
    shapes |= _lin(f"{e}.LayerNorm", h, 0) | _lin("demultiplexer.pre_decoder", h, h)
    shapes |= _lin("demultiplexer.pre_decoder_layer_norm", h, 0)
    for i in range(cfg["num_hidden_layers"]):
        shapes |= _layer_shapes(f"{family}.encoder.layer.{i}", h, mid)
    for k in range(1, depth + 1):
        shapes |= _lin(f"demux_module.dense_{k}", h, 2 * h if k == 1 else h)
        shapes |= _lin(f"demux_module.layer_norm_{k}", h, 0)
    if cfg["muxing_variant"] == "gaussian_attention_v2":
        shapes |= _layer_shapes("muxing_attention", h, mid)
        shapes |= _layer_shapes("muxing_attention_2", h, mid)
    if "retrieval" in heads:
        shapes |= _lin("retrieval_head.pre_decoder", h, h)
        shapes |= _lin("retrieval_head.pre_decoder_layer_norm", h, 0)
        shapes |= _lin("retrieval_head.decoder", vocab, h)
    if "discriminator" in heads:
        shapes |= _lin("discriminator_predictions.dense", h, h)
        shapes |= _lin("discriminator_predictions.dense_prediction", 1, h)
    if "classifier" in heads:
        if family == "electra" and "Sequence" in cfg["architectures"][0]:
            shapes |= _lin("classifier.dense", h, h) | _lin("classifier.out_proj", labels, h)
        else:
            shapes |= _lin("classifier", labels, h)
    gen = torch.Generator().manual_seed(seed)
    sd: State = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=gen)
        if "LayerNorm" in key or "layer_norm" in key:
            value = (1.0 if key.endswith("weight") else 0.0) + 0.1 * value
        elif key.endswith(".bias"):
            value = 0.1 * value
        elif "embeddings." in key:  # of the size of a trained BERT's, so logits stay near 1
            value = 0.2 * value
        elif key != "demux_module.demux_instance_embedding":
            value = value / math.sqrt(shape[-1])
        sd[key] = value
    sd["instance_embedding"] = sd["instance_embedding"] / sd["instance_embedding"].norm(
        dim=1, keepdim=True
    )
    sd[f"{e}.position_ids"] = torch.arange(cfg["max_position_embeddings"])[None]
    if "retrieval" in heads:
        if family == "bert":  # tied to the input embeddings
            sd["retrieval_head.decoder.weight"] = sd[f"{e}.word_embeddings.weight"]
        else:  # the ELECTRA head's bias is one parameter under two names
            sd["retrieval_head.bias"] = sd["retrieval_head.decoder.bias"]
    for owner in ("demultiplexer", "retrieval_head"):  # the shared demux module, saved per owner
        for key in [k for k in sd if k.startswith("demux_module.")]:
            sd[f"{owner}.{key}"] = sd[key]
    return sd


def write(folder: Path, cfg: dict[str, Any], sd: State, fmt: str = "bin") -> Path:
    """``config.json`` plus ``pytorch_model.bin`` (torch.save) or ``model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    if fmt == "bin":
        torch.save(sd, folder / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(
            {k: v.clone().contiguous() for k, v in sd.items()}, str(folder / "model.safetensors")
        )
    return folder
