"""The transform contract: a pydantic config that is also the plugin object.

A transform changes a model. Its fields are its configuration, validated with ``extra="forbid"``
so that a typo in a recipe is an error, not a silently ignored option. Its methods are the
lifecycle the core calls, named after the events they answer, in the order they come:

================================  ============================================================
hook                              when the core calls it, and what for
================================  ============================================================
``apply(model, ctx)``             a stage starts (in recipe order; again when a stage resumes):
                                  structural change (wrap, insert masks, drop layers)
``parameter_groups(model)``       once, as the optimizer is built: extra optimizer groups
``loss_terms(model, batch, ..)``  every micro-batch: extra loss terms added to the objective's
``on_step(model, ctx)``           after every optimizer step: warm-ups, schedules, projections
``step_figures(model, ctx)``      after every optimizer step: figures to log, not in the loss
``selectable(model, ctx)``        at every validation: may this state be kept as the best?
``finalize(model, ctx)``          the stage ends: make the change permanent
``describe()``                    after ``finalize``: what it did, for the stage record
``state()``                       the model is saved: JSON-ready facts ``rebuild`` needs
``load_state(state)``             a saved model loads: take ``state()`` back, before ``rebuild``
``rebuild(model, ctx)``           a saved model loads: recreate the structure before the weights
``export_graph(model, graph)``    the model is exported: supply, wrap or refuse its graph
``check(facts)``                  before anything runs (``effkit validate``, and ``apply``
                                  before it writes): refuse what cannot work on the model
                                  ``facts`` describe, and update them to what it will become
================================  ============================================================

Every hook has a default that does nothing, so a transform implements only what it needs. A
third-party transform is a subclass registered under the ``effkit.transforms`` entry-point group.

Besides the hooks, these are the capabilities a plugin may rely on or provide:

- ``Transform.recorded`` (class variable): whether a finalized model remembers the transform;
- ``EffkitModel.adapter``: a module that takes over the model's forward pass (multiplexing);
  the transform that installs one supplies the model's export graph;
- :class:`StageContext`: what a hook may read while a stage runs, including
  ``ctx.live_layers``, set by a transform that masks whole encoder layers during training;
- :class:`FollowsHiddenPruning`: a module with hidden-width tensors of its own follows a
  transform that removes hidden dimensions;
- :data:`StageRef`: the type of a field that names an earlier stage (a teacher);
- :data:`SPARSITY`: the ``describe()`` key for the share of encoder parameters removed;
- :class:`ExportGraph`: what ``export_graph`` receives and returns;
- ``EffkitModel.set_encoder_layers``: the way a transform replaces the list of encoder layers,
  keeping the config's layer count and each attention's layer index right;
- :class:`ModelFacts`: what ``check`` reads and updates, the model a stage will receive as the
  preflight knows it without loading weights or training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Protocol,
    get_args,
    get_origin,
    runtime_checkable,
)

import torch
from pydantic import BaseModel, ConfigDict

from effkit.errors import ModelError

if TYPE_CHECKING:
    from effkit.data import TaskData
    from effkit.models import EffkitModel


class StageReference:
    """The marker of :data:`StageRef` fields (see there)."""

    def __repr__(self) -> str:
        return "StageRef"


StageRef = Annotated[str, StageReference()]
"""The type of a plugin field that names an earlier stage of the recipe (or a saved model
folder), such as a distillation teacher. The runner finds these fields by their type: a stage
that names another one this way runs after it and is keyed by its output. A plain ``str`` field
whose value happens to equal a stage name is only a string."""


class LocalPathMarker:
    """The marker of :data:`LocalPath` fields."""

    def __repr__(self) -> str:
        return "LocalPath"


LocalPath = Annotated[str, LocalPathMarker()]
"""The type of a plugin field that names a local file or folder (such as a text file to read):
a relative value in a recipe file is read relative to the recipe's folder (:mod:`effkit.paths`)."""


def _refers(annotation: Any) -> bool:
    """Whether ``annotation`` is :data:`StageRef`, alone or inside ``X | None`` / ``list[X]``."""
    if get_origin(annotation) is Annotated:
        return any(isinstance(m, StageReference) for m in get_args(annotation)[1:])
    return any(_refers(arg) for arg in get_args(annotation))


def stage_refs(config: BaseModel) -> list[str]:
    """The values of every :data:`StageRef` field of a transform's or objective's config."""
    found: list[str] = []
    for name, info in type(config).model_fields.items():
        marked = any(isinstance(m, StageReference) for m in info.metadata)
        if not (marked or _refers(info.annotation)):
            continue
        value = getattr(config, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in values if isinstance(v, str)]
    return found


SPARSITY = "sparsity"
"""Key of :meth:`Transform.describe` for the share of encoder parameters a pruning transform
removed (a float in [0, 1]); the search reports the last one a run's stages recorded."""


@dataclass
class ModelFacts:
    """The model a transform will receive, as a preflight knows it before anything runs.

    The preflight reads them from the starting model's config (and a saved model's transform
    history) without loading weights, then hands them to every transform's and objective's
    :meth:`Transform.check` in recipe order. A check refuses what cannot work by raising an
    :class:`~effkit.errors.EffkitError`, and updates the facts to what the model becomes after
    its transform (fewer layers, another number format, a forward pass taken over).
    """

    family: str
    """The transformers ``model_type`` (``bert``, ``roberta``, ``electra``...)."""
    task: str
    layers: int
    """Encoder layers."""
    hidden_size: int
    heads: int
    max_positions: int | None
    """The most tokens one input may have (absolute position embeddings), or None."""
    max_length: int = 128
    """Tokens per input the recipe trains with (``data.max_length``)."""
    stage: str = ""
    """The stage being checked."""
    trains: bool = False
    """Whether the stage being checked trains (has steps)."""
    number_format: str = "float32"
    """``float32``, ``bf16``, ``fp16`` or ``int8``: how the weights are stored."""
    forward_by: str | None = None
    """The transform whose module took over the forward pass (``EffkitModel.adapter``)."""
    forward_config: dict[str, Any] = field(default_factory=dict)
    """That transform's configuration (its fields), for a later transform to compare with (a
    model read from another project's checkpoint arrives with its forward pass taken over)."""
    group_size: int = 1
    """Inputs per forward pass (multiplexing sets N)."""
    fixed_hidden: str | None = None
    """Why the hidden width cannot be pruned from now on, when it cannot."""
    encoder_problem: str | None = None
    """Why the encoder's parts (embeddings, a list of layers) cannot be found, when they cannot:
    transforms that change the encoder's structure or its forward pass refuse such a model."""
    layer_problem: str | None = None
    """Why the encoder layers are not BERT-style (attention.self.query/key/value,
    attention.output.dense, intermediate.dense, output.dense, all linear), when they are not:
    the transforms that prune inside a layer refuse such a model."""
    hidden_pruned_by: str | None = None
    """A transform of the stage being checked that removes hidden dimensions when it ends."""
    applied: list[str] = field(default_factory=list)
    """Registered names of the transforms applied so far, in order."""
    lookup: Callable[[str], ModelFacts] | None = None
    """The facts of an earlier stage's output or of a model folder, by the name a
    :data:`StageRef` field holds (a teacher)."""

    def require_encoder(self, transform: str, *, bert_layers: bool = False) -> None:
        """Refuse ``transform`` when the model's encoder parts cannot be found or, with
        ``bert_layers``, when its layers are not BERT-style (see :attr:`layer_problem`)."""
        problem = self.encoder_problem or (self.layer_problem if bert_layers else None)
        if problem is not None:
            raise ModelError(
                f"{transform} does not support {self.family} models: {problem}",
                hint="docs/encoders.md lists the encoders each transform supports",
            )

    def of(self, ref: str) -> ModelFacts:
        """The facts of the model ``ref`` names (see :attr:`lookup`)."""
        if self.lookup is None:
            raise ModelError(f"'{ref}' cannot be looked up outside a recipe")
        return self.lookup(ref)


@dataclass
class StageContext:
    """What a transform or objective may read while a stage runs."""

    stage: str
    """Name of the running stage (``"api"`` when transforms are stacked from Python)."""
    tokenizer: Any
    data: TaskData | None = None
    """The task's data (train / validation / test), when the stage has any."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    max_length: int = 128
    total_steps: int = 0
    step: int = 0
    work_dir: Path | None = None
    """A folder the stage owns (checkpoints live here); None outside a run."""
    resolve_model: Callable[[str], EffkitModel] | None = None
    """Loads an earlier stage's model by stage name, or a saved model folder (teachers). Every
    context the core makes has one (outside a run: :func:`effkit.load` for folders)."""
    rebuilding: bool = False
    """True while :func:`effkit.models.load` re-creates a saved structure."""
    live_layers: Callable[[], list[bool] | None] | None = None
    """Set by a transform that masks whole encoder layers while the stage trains: for the last
    forward pass, whether each layer's attention block was kept (None: no layer masks). Layer
    distillation matches teacher layers to live student layers only."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-stage scratch space shared between transforms and the objective."""

    def load_model(self, ref: str) -> EffkitModel:
        """Load an earlier stage's model or a model folder; an error when nothing can."""
        if self.resolve_model is None:
            raise ModelError(
                f"stage '{self.stage}' cannot load '{ref}': it runs without a model resolver"
            )
        return self.resolve_model(ref)


class Transform(BaseModel):
    """Base class of every transform: subclass it, add fields, override the hooks you need."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: ClassVar[str] = ""
    """Registry name, set when the class is loaded through the registry."""
    recorded: ClassVar[bool] = True
    """Whether a finalized model remembers this transform (and replays it on load). A transform
    that leaves nothing behind in the model's structure (freezing, a training-only loss) sets
    False, so the saved model loads without its plugin installed."""

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Change the model's structure at the start of a stage; return the (new) model."""
        return model

    def parameter_groups(self, model: EffkitModel) -> list[dict[str, Any]]:
        """Extra optimizer parameter groups (dicts as ``torch.optim`` takes them).

        Parameters listed here are taken out of the default groups. A group may set its own
        ``lr``, ``weight_decay`` or ``maximize`` (gradient ascent, e.g. Lagrange multipliers).
        """
        return []

    def loss_terms(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], outputs: Any, ctx: StageContext
    ) -> dict[str, torch.Tensor]:
        """Named scalar terms added to the objective's loss at this step."""
        return {}

    def on_step(self, model: EffkitModel, ctx: StageContext) -> None:
        """Called after every optimizer step; ``ctx.step`` is the number of steps done."""

    def step_figures(self, model: EffkitModel, ctx: StageContext) -> dict[str, float]:
        """Figures to log in the training history after every step (not part of the loss)."""
        return {}

    def selectable(self, model: EffkitModel, ctx: StageContext) -> bool:
        """Whether the model at this step may be kept as the stage's best (validation-based
        model selection). A transform still on its way to a target (a sparsity warm-up) says
        no, so that selection cannot pick an early, less compressed state."""
        return True

    def finalize(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Make the change permanent at the end of the stage; return the final model."""
        return model

    def describe(self) -> dict[str, Any]:
        """What the transform did, for the report (JSON-ready)."""
        return {}

    def state(self) -> dict[str, Any]:
        """JSON-ready facts :meth:`rebuild` needs (kept heads, widths...); saved with the model."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state` returned, before :meth:`rebuild` runs."""

    def rebuild(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        """Recreate the finalized structure on an untrained model so saved weights fit it.

        The default applies and finalizes again, which is right for transforms whose structure
        depends on the configuration alone. Transforms whose result depends on training (which
        heads a mask dropped) override this and read what :meth:`state` saved.
        """
        return self.finalize(self.apply(model, ctx), ctx)

    def check(self, facts: ModelFacts) -> None:
        """Before anything runs: raise an :class:`~effkit.errors.EffkitError` saying why this
        transform cannot work on the model ``facts`` describe, and update ``facts`` to what the
        model will be after it. The default accepts every model and changes nothing."""

    def export_graph(self, model: EffkitModel, graph: ExportGraph) -> ExportGraph:
        """The graph an export traces for a finalized model this transform is part of.

        Called for each transform in the model's history, in order, starting from the plain
        forward pass. Return ``graph`` (the default), a wrapped or replaced graph (a transform
        that takes over the forward pass supplies its own), or raise :class:`ModelError` saying
        why the result cannot be exported and what to do instead.
        """
        return graph

    @classmethod
    def registered_name(cls) -> str:
        """The name this class is registered under (looked up once, then remembered)."""
        if not cls.__dict__.get("name"):
            from effkit import registry

            cls.name = registry.name_of(registry.TRANSFORMS, cls)
        return cls.name

    def spec(self) -> dict[str, Any]:
        """The recipe form of this transform: its name and the fields that differ from defaults."""
        return {
            "name": self.registered_name(),
            **self.model_dump(mode="json", exclude_defaults=True),
        }


@runtime_checkable
class FollowsHiddenPruning(Protocol):
    """A module that keeps hidden-width tensors of its own (a multiplexer's keys, say).

    A transform that removes hidden dimensions of the encoder calls ``prune_hidden`` on every
    such module in the model (the outermost ones), so that it keeps the same dimensions and the
    model computes what it computed with the removed dimensions masked to zero.
    """

    def prune_hidden(self, kept: torch.Tensor) -> None:
        """Keep only the hidden dimensions ``kept`` (sorted indices)."""


@dataclass
class ExportGraph:
    """What an export traces: a module with tensors in and logits out, and its input layout.

    :meth:`Transform.export_graph` receives and returns one of these; see
    :mod:`effkit.export.graph` for how export uses it.
    """

    module: torch.nn.Module
    """Called with ``input_ids, attention_mask`` (and ``token_type_ids`` when the encoder has
    segment embeddings) in the graph's layout; returns the logits in the same layout."""
    group_size: int | None = None
    """None: inputs ``[batch, seq]`` and logits ``[batch, ...]``. N: the graph runs N inputs per
    row, inputs ``[groups, N, seq]`` and logits ``[groups, N, ...]``, one row per input."""
    onnx_quantize: str | None = None
    """None: the ONNX file holds :attr:`module` as traced. ``"dynamic-int8"`` (one weight scale
    per output channel) or ``"dynamic-int8-per-tensor"`` (one per layer): after writing, the
    core quantizes the file with ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights
    for every MatMul with constant weights, activations quantized per batch at run time) and
    checks it against the PyTorch model within the int8 tolerance, not the float one. Set by a
    transform whose model runs int8 layers; its :attr:`module` holds the float weights they
    stand for, so that the quantized file computes what the PyTorch model does."""

    def fold(self, tensor: torch.Tensor) -> torch.Tensor:
        """A ``[batch, ...]`` tensor in the graph's layout (``batch`` a multiple of the group)."""
        if self.group_size is None:
            return tensor
        return tensor.reshape(-1, self.group_size, *tensor.shape[1:])

    def unfold(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor in the graph's layout as the ``[batch, ...]`` batch it holds."""
        if self.group_size is None:
            return tensor
        return tensor.reshape(-1, *tensor.shape[2:])

    def dynamic_shapes(self, inputs: int) -> tuple[dict[int, Any], ...]:
        """torch.export's dynamic axes for each of ``inputs`` inputs: rows and tokens."""
        rows = torch.export.Dim("batch" if self.group_size is None else "groups")
        seq = torch.export.Dim("seq")
        axes = {0: rows, 1: seq} if self.group_size is None else {0: rows, 2: seq}
        return tuple(dict(axes) for _ in range(inputs))
