"""Knowledge distillation from a teacher model: logits, and hidden layers matched dynamically.

``Distill(teacher="finetune")`` adds CoFi's distillation losses to a stage (Xia et al., 2022;
princeton-nlp/CoFiPruning, ``layer_distill_version=4``):

- **logits**: ``KL(softmax(teacher / T) || softmax(student / T)) * T^2``, weight ``logit_weight``
  (CoFi: T = 2, weight 0.1). Token tasks average over the positions the attention mask keeps.
  Regression: the mean squared error of the student's and the teacher's predictions, both
  standardised with the student's target scale (no temperature).
- **layers** (``layer_map: dynamic``): every student layer's output goes through a learned
  ``Linear(H_student, H_teacher)`` (initialised to the identity), and each of a few teacher
  layers is matched to the student layer with the smallest MSE at this step, scanning teacher
  layers from the last and requiring each match to lie below the next one's (CoFi's ordered
  search); layers whose attention block a CoFi mask is dropping are skipped. Weight
  ``layer_weight`` (CoFi: 0.9). With the default ``teacher_layers`` a 12-layer teacher uses
  CoFi's layers 2, 5, 8, 11 (0-based); other depths get up to 4 layers spread the same way.
- **output states** (``output_weight``): the mean squared error between the student's and the
  teacher's final states at the positions the task head reads (every position of a token task,
  the first of a sequence task), input by input. A multiplexed model's states are its
  demultiplexed ones, so this works for any pair of N: it asks each demultiplexed input to carry
  what the teacher's encoder made of that input on its own, context included, which logits
  (a few numbers per position) do not.
- **task loss**: CoFi trains on the distillation losses alone. The objective's loss is always
  added by the training loop, so ``task_weight`` w is applied by adding
  ``-(1 - w) * cross_entropy(student logits, labels)`` (regression: the mean squared error on
  standardised targets), computed from the batch's labels: exact for the ``task`` objective
  without label smoothing (or with the mse loss) and for the task part of ``mux-task``; without
  labels in the batch (pre-training objectives) no term is added.

The teacher is loaded with ``ctx.load_model(teacher)``: an earlier stage of the recipe by name,
or a saved model folder. It is frozen, kept in evaluation mode, and run under ``no_grad`` on
the same inputs as the student; without the layer loss and with a teacher that is not
multiplexed, its logits (and output states) are kept per input (``cache_teacher``), so it runs
once per training input. The layer map is attached to the student as ``model.distill_map``
during the stage (so checkpoints hold it) and removed by ``finalize``, with the teacher;
nothing structural remains, so the transform is not recorded in the model.

The student returns hidden states through ``config.output_hidden_states`` (set while the stage
runs, restored by ``finalize``). Multiplexed models: logits are per input, so logit
distillation works for any pair; hidden states are per multiplexed row, so layer distillation
needs the student and the teacher to multiplex the same number of inputs N (the same grouping)
and is refused otherwise (use ``layer_map: none``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PrivateAttr, field_validator, model_validator
from torch import nn

from effkit import (
    EffkitModel,
    ModelError,
    ModelFacts,
    StageContext,
    StageRef,
    Transform,
    in_head_units,
    task_loss,
)

from .alignment import default_teacher_layers, ordered_alignment

__all__ = ["Distill", "default_teacher_layers", "ordered_alignment"]

MAP_ATTRIBUTE = "distill_map"
CACHE_LIMIT_BYTES = 512 * 2**20
"""At most this much of teacher logits is kept (a token task's logits grow with length)."""


def _width(model: EffkitModel) -> int:
    """Width of the hidden states (ELECTRA projects its embeddings up to it; CoFi may have
    pruned it, which the embeddings' LayerNorm shows)."""
    base = getattr(model.hf, model.hf.base_model_prefix, model.hf)
    project = getattr(base, "embeddings_project", None)
    if isinstance(project, nn.Linear):
        return int(project.out_features)
    norm = getattr(getattr(base, "embeddings", None), "LayerNorm", None)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None:
        return int(norm.weight.shape[0])
    return int(model.config.hidden_size)


def _depth(model: EffkitModel) -> int:
    base = getattr(model.hf, model.hf.base_model_prefix, model.hf)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ModelError(
            f"{type(model.hf).__name__} has no encoder.layer list; layer distillation supports "
            "BERT-family encoders (or set layer_map: none)"
        )
    return len(layers)


def _multiplexing(model: EffkitModel) -> int:
    """How many inputs share one row of the model's forward pass (1: not multiplexed)."""
    return int(getattr(model.adapter, "n", 1)) if model.adapter is not None else 1


class Distill(Transform):
    """Distil a teacher: KL on logits plus layer MSE with CoFi's dynamic layer matching."""

    recorded: ClassVar[bool] = False

    teacher: StageRef = Field(
        "finetune", min_length=1,
        description="The teacher: an earlier stage's name, or a saved model folder.",
    )  # fmt: skip
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature of the logit loss.")
    logit_weight: float = Field(0.1, ge=0.0, description="Weight of the KL loss on logits.")
    layer_weight: float = Field(0.9, ge=0.0, description="Weight of the layer-wise MSE loss.")
    task_weight: float = Field(
        0.0, ge=0.0,
        description="Weight of the objective's cross-entropy on the labels (CoFi: 0, "
        "distillation only; 1 leaves it as it is).",
    )  # fmt: skip
    output_weight: float = Field(
        0.0, ge=0.0,
        description="Weight of the MSE between the student's final states (demultiplexed per "
        "input when multiplexed, so any N) and the teacher's, at the positions the task head "
        "reads.",
    )  # fmt: skip
    layer_map: Literal["dynamic", "none"] = Field(
        "dynamic", description="dynamic: CoFi's layer matching through a learned map; none: "
        "logits only.",
    )  # fmt: skip
    teacher_layers: list[int] | None = Field(
        None, description="Teacher layers (0-based) to match; default: CoFi's spread of up to 4."
    )
    cache_teacher: bool = Field(
        True, description="Without the layer loss (layer_map: none) and with a teacher that is "
        "not multiplexed: keep the frozen teacher's logits and output states of each training "
        "input, so the teacher runs once per input instead of once per step.",
    )  # fmt: skip

    _teacher: EffkitModel | None = PrivateAttr(None)
    _layers: list[int] = PrivateAttr(default_factory=list)
    _restore: list[tuple[Any, bool]] = PrivateAttr(default_factory=list)
    _alignment: list[int] = PrivateAttr(default_factory=list)
    _teacher_parameters: int = PrivateAttr(0)
    _cache: dict[bytes, tuple[torch.Tensor, torch.Tensor | None]] = PrivateAttr(
        default_factory=dict
    )
    _cache_bytes: int = PrivateAttr(0)
    _teacher_rows: int = PrivateAttr(0)

    @field_validator("teacher_layers")
    @classmethod
    def _distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value or any(i < 0 for i in value):
                raise ValueError("teacher layers are 0-based, non-negative, and at least one")
            if len(set(value)) != len(value):
                raise ValueError("teacher layers must be distinct")
        return value

    @model_validator(mode="after")
    def _some_loss(self) -> Distill:
        if self.logit_weight == 0 and self.output_weight == 0 and not self.layer_loss_on:
            raise ValueError(
                "logit_weight, output_weight and the layer loss are all off; nothing to distil"
            )
        return self

    @property
    def layer_loss_on(self) -> bool:
        return self.layer_map == "dynamic" and self.layer_weight > 0

    # ------------------------------------------------------------------ lifecycle

    def check(self, facts: ModelFacts) -> None:
        teacher = facts.of(self.teacher)
        problem = None
        if teacher.task != facts.task:
            problem = f"teacher '{self.teacher}' is a {teacher.task} model, the student not"
        elif self.layer_loss_on and teacher.group_size != facts.group_size:
            problem = (f"layer distillation compares hidden states row by row, but the student "
                       f"multiplexes {facts.group_size} inputs per row and the teacher "
                       f"{teacher.group_size} (use layer_map: none)")  # fmt: skip
        elif self.layer_loss_on and (found := facts.encoder_problem or teacher.encoder_problem):
            problem = (f"layer distillation matches encoder layers, and {found} "
                       "(use layer_map: none to distil the logits only)")  # fmt: skip
        elif self.layer_loss_on and (top := max(self.teacher_layers or [0])) >= teacher.layers:
            problem = (f"teacher layer {top} does not exist; the teacher has "
                       f"{teacher.layers} layers (0..{teacher.layers - 1})")  # fmt: skip
        if problem:
            raise ModelError(f"distill: {problem}")

    def apply(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        if ctx.rebuilding:
            return model
        teacher = ctx.load_model(self.teacher)
        if teacher.task.type != model.task.type or len(teacher.task.labels or []) != len(
            model.task.labels or []
        ):
            raise ModelError(
                f"distill: teacher '{self.teacher}' is a {teacher.task.type} model with "
                f"{len(teacher.task.labels or [])} labels; the student is a {model.task.type} "
                f"model with {len(model.task.labels or [])}"
            )
        teacher.to(next(model.parameters()).device).eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        self._teacher = teacher
        self._teacher_parameters = teacher.num_parameters()
        if self.layer_loss_on:
            student_n, teacher_n = _multiplexing(model), _multiplexing(teacher)
            if student_n != teacher_n:
                raise ModelError(
                    f"distill: layer distillation compares hidden states row by row, but the "
                    f"student multiplexes {student_n} inputs per row and the teacher {teacher_n}",
                    hint="use a teacher with the same N, or set layer_map: none (logits only)",
                )
            depth = _depth(teacher)
            _depth(model)  # the student needs the same layout
            self._layers = list(self.teacher_layers or default_teacher_layers(depth))
            if max(self._layers) >= depth:
                raise ModelError(
                    f"distill: teacher layer {max(self._layers)} does not exist; the teacher has "
                    f"{depth} layers (0..{depth - 1})"
                )
            if hasattr(model, MAP_ATTRIBUTE):
                raise ModelError("distill: the model already carries a layer map; apply it once")
            layer_map = nn.Linear(_width(model), _width(teacher))
            with torch.no_grad():
                nn.init.eye_(layer_map.weight)
                layer_map.bias.zero_()
            setattr(model, MAP_ATTRIBUTE, layer_map.to(next(model.parameters()).device))
        if self.output_weight > 0 and _width(model) != _width(teacher):
            raise ModelError(
                f"distill: output states are compared as they are, but the student is "
                f"{_width(model)} wide and the teacher {_width(teacher)}",
                hint="set output_weight: 0, or use a teacher of the student's width",
            )
        self._restore = []
        for part in (model, teacher):  # hidden states returned only where a loss reads them
            if self.layer_loss_on or (self.output_weight > 0 and not _demultiplexes(part)):
                config = part.hf.config
                self._restore.append((config, bool(getattr(config, "output_hidden_states", False))))
                config.output_hidden_states = True
        return model

    def loss_terms(
        self, model: EffkitModel, batch: dict[str, torch.Tensor], outputs: Any, ctx: StageContext
    ) -> dict[str, torch.Tensor]:
        teacher = self._teacher
        if teacher is None:
            raise ModelError("distill: no teacher is loaded (apply the transform first)")
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "word_ids")}
        device = inputs["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        taught: Any = None
        if self._caching(teacher):
            teacher_logits, teacher_states = self._cached_teacher(teacher, inputs)
        else:
            with torch.no_grad():
                taught = teacher(**inputs)
            teacher_logits = taught.logits
            teacher_states = head_states(teacher, taught) if self.output_weight > 0 else None
            self._teacher_rows += int(inputs["input_ids"].shape[0])
        terms: dict[str, torch.Tensor] = {}
        mask = inputs.get("attention_mask")
        if self.logit_weight > 0:
            if getattr(outputs, "logits", None) is None:
                raise ModelError(
                    "distill: this stage's objective gives no task logits (a pre-training "
                    "objective); logit distillation needs a task objective"
                )
            terms["distill_logits"] = self.logit_weight * (
                F.mse_loss(outputs.logits.float(), in_head_units(model, teacher_logits.float()))
                if model.task.is_regression
                else self._logit_loss(outputs.logits, teacher_logits, mask)
            )
        if self.output_weight > 0:
            assert teacher_states is not None
            student_states = head_states(model, outputs)
            if student_states.shape != teacher_states.shape:
                raise ModelError(
                    f"distill: the student's output states {tuple(student_states.shape)} and the "
                    f"teacher's {tuple(teacher_states.shape)} do not line up"
                )
            token_mask = mask if student_states.shape[1] > 1 else None
            terms["distill_output"] = self.output_weight * _mse(
                student_states, teacher_states, token_mask
            )
        if self.layer_loss_on:
            terms["distill_layers"] = self.layer_weight * self._layer_loss(
                model, outputs, taught, mask, ctx
            )
        if self.task_weight != 1.0 and "labels" in batch:
            terms["distill_task_offset"] = -(1.0 - self.task_weight) * task_loss(
                outputs.logits, batch["labels"], model
            )
        return terms

    def finalize(self, model: EffkitModel, ctx: StageContext) -> EffkitModel:
        if hasattr(model, MAP_ATTRIBUTE):
            delattr(model, MAP_ATTRIBUTE)
        for config, value in self._restore:
            config.output_hidden_states = value
        self._restore = []
        self._teacher = None
        self._cache, self._cache_bytes = {}, 0
        return model

    def describe(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "teacher_parameters": self._teacher_parameters,
            "temperature": self.temperature,
            "weights": {
                "logits": self.logit_weight,
                "layers": self.layer_weight if self.layer_loss_on else 0.0,
                "output": self.output_weight,
                "task": self.task_weight,
            },
            "teacher_layers": self._layers,
            "last_alignment": self._alignment,
            "teacher_rows": self._teacher_rows,
        }

    # ------------------------------------------------------------------ teacher logits

    def _caching(self, teacher: EffkitModel) -> bool:
        return self.cache_teacher and not self.layer_loss_on and _multiplexing(teacher) == 1

    def _cached_teacher(
        self, teacher: EffkitModel, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits (and output states, when the output loss is on) for each row of
        ``inputs``, running it on unseen rows only.

        A row's key is its unpadded input ids, attention mask and segment ids, so the same
        example padded to another batch's length is found again. Token tasks keep the values
        of the real positions and pad them back with zeros (the losses skip padding).
        """
        fields = sorted(k for k, v in inputs.items() if torch.is_tensor(v) and v.dim() >= 2)
        rows, width = (int(n) for n in inputs["input_ids"].shape[:2])
        cpu = {k: inputs[k].detach().cpu() for k in fields}
        mask = cpu.get("attention_mask")
        lengths = [width] * rows
        if mask is not None:
            for i in range(rows):
                real = int(mask[i].sum())
                if bool(mask[i, :real].all()):  # right padding: trim it off the key
                    lengths[i] = real
        keys = [
            b"|".join(cpu[k][i, : lengths[i]].numpy().tobytes() for k in fields)
            for i in range(rows)
        ]
        found = {i: self._cache[key] for i, key in enumerate(keys) if key in self._cache}
        missing = [i for i in range(rows) if i not in found]
        if missing:
            index = torch.tensor(missing, device=inputs["input_ids"].device)
            subset = {k: v.index_select(0, index) if k in fields else v for k, v in inputs.items()}
            with torch.no_grad():
                taught = teacher(**subset)
            fresh = taught.logits.detach().float().cpu()
            states = None
            if self.output_weight > 0:
                states = head_states(teacher, taught).detach().float().cpu()
            self._teacher_rows += len(missing)
            token_task = fresh.dim() == 3
            for row, i in enumerate(missing):
                cut = lengths[i] if token_task else 1
                state = None if states is None else states[row, :cut].clone()
                value = (fresh[row, :cut] if token_task else fresh[row]).clone(), state
                found[i] = value
                if self._cache_bytes < CACHE_LIMIT_BYTES:  # past the limit: no new entries
                    self._cache[keys[i]] = value
                    self._cache_bytes += sum(t.numel() * t.element_size()
                                             for t in value if t is not None)  # fmt: skip
        device = inputs["input_ids"].device
        logits = _padded([found[i][0] for i in range(rows)], width)
        if self.output_weight == 0:
            return logits.to(device), None
        parts = [found[i][1] for i in range(rows)]
        assert all(p is not None for p in parts)
        positions = width if logits.dim() == 3 else 1
        return logits.to(device), _padded(parts, positions).to(device)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ losses

    def _logit_loss(
        self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if student.dim() == 3:  # token tasks: the positions the attention mask keeps
            keep = (
                mask.bool()
                if mask is not None
                else torch.ones(student.shape[:2], dtype=torch.bool, device=student.device)
            )
            student, teacher = student[keep], teacher[keep]
        t = self.temperature
        return F.kl_div(
            F.log_softmax(student.float() / t, dim=-1),
            F.softmax(teacher.float() / t, dim=-1),
            reduction="batchmean",
        ) * (t * t)

    def _layer_loss(
        self,
        model: EffkitModel,
        outputs: Any,
        taught: Any,
        mask: torch.Tensor | None,
        ctx: StageContext,
    ) -> torch.Tensor:
        student_states = getattr(outputs, "hidden_states", None)
        teacher_states = getattr(taught, "hidden_states", None)
        if not student_states or not teacher_states:
            raise ModelError(
                "distill: the model's outputs carry no hidden states; the objective of this stage "
                "does not return them (set layer_map: none)"
            )
        layer_map: nn.Module = getattr(model, MAP_ATTRIBUTE)
        mapped = [layer_map(h) for h in student_states[1:]]
        targets = [teacher_states[1:][i] for i in self._layers]
        losses = torch.stack(
            [torch.stack([_mse(s, t, mask) for s in mapped]) for t in targets]
        )  # [teacher layers, student layers]; inf: shapes differ (a demultiplexed last state)
        live = ctx.live_layers() if ctx.live_layers is not None else None
        if live is not None and len(live) != len(mapped):
            live = None
        alignment = ordered_alignment(losses.detach(), live)
        self._alignment = alignment
        pairs = [(row, col) for row, col in enumerate(alignment) if col >= 0]
        if not pairs:
            raise ModelError("distill: no student layer's hidden states match the teacher's shape")
        return torch.stack([losses[row, col] for row, col in pairs]).sum()


def _demultiplexes(model: EffkitModel) -> bool:
    """True when the model's adapter keeps the states its head read (a multiplexed model)."""
    return callable(getattr(model.adapter, "head_states", None))


def head_states(model: EffkitModel, outputs: Any) -> torch.Tensor:
    """What the task head of ``model`` read in the forward pass that gave ``outputs``, per input in
    input order: ``[B, L, H]`` for token tasks, ``[B, 1, H]`` for sequence tasks (the first
    position). A multiplexed model's are its demultiplexed states."""
    if _demultiplexes(model):
        found = model.adapter.head_states()  # type: ignore[union-attr,operator]
        if found is None:
            raise ModelError(
                "distill: the multiplexed model ran without demultiplexing its outputs (a "
                "pre-training objective); output distillation needs a task objective"
            )
        return found
    hidden = getattr(outputs, "hidden_states", None)
    if not hidden:
        raise ModelError("distill: the model's outputs carry no hidden states")
    last = hidden[-1]
    return last if model.task.type == "token-classification" else last[:, :1]


def _padded(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Per-input tensors stacked; ``[positions, D]`` ones zero-padded to ``width`` positions."""
    if parts[0].dim() == 1:
        return torch.stack(parts)
    out = torch.zeros(len(parts), width, parts[0].shape[-1], dtype=parts[0].dtype)
    for i, part in enumerate(parts):
        out[i, : part.shape[0]] = part
    return out


def _mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the attention mask's positions when the shapes line up (plain
    mean otherwise); infinite for states of different shapes, which cannot be compared."""
    if student.shape != teacher.shape:
        return torch.full((), float("inf"), device=student.device)
    squared = (student.float() - teacher.float()).pow(2)
    if mask is not None and mask.shape == student.shape[:2]:
        weights = mask.to(squared.dtype)[..., None]
        return (squared * weights).sum() / (weights.sum() * squared.shape[-1]).clamp(min=1.0)
    return squared.mean()
