"""The transform contract: a pydantic config that is also the plugin object.

A transform changes a model. Its fields are its configuration, validated with ``extra="forbid"``
so that a typo in a recipe is an error, not a silently ignored option. Its methods are the
lifecycle the runner calls, named after the events they answer:

========================  =====================================================================
``apply(model, ctx)``     structural change when a stage starts (wrap, insert masks, drop layers)
``parameter_groups``      extra optimizer groups (their own learning rate, ``maximize=True``...)
``loss_terms``            extra loss terms added to the objective's loss at every step
``on_step``               a callback after every optimizer step (warm-ups, schedules)
``finalize(model, ctx)``  make the change permanent when the stage ends (remove what masks dropped)
``describe()``            what it did, for the report
``state()``               JSON-ready facts needed to rebuild the finalized structure on load
``rebuild(model, ctx)``   recreate the finalized structure (no training data) before weights load
========================  =====================================================================

Every hook has a default that does nothing, so a transform implements only what it needs. A
third-party transform is a subclass registered under the ``effkit.transforms`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from effkit.data import TaskData
    from effkit.models import EffkitModel

SPARSITY = "sparsity"
"""Key of :meth:`Transform.describe` for the share of encoder parameters a pruning transform
removed (a float in [0, 1]); the search reports the last one a run's stages recorded."""


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
    """Loads an earlier stage's model by stage name, or a saved model folder (teachers)."""
    rebuilding: bool = False
    """True while :func:`effkit.models.load` re-creates a saved structure."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-stage scratch space shared between transforms and the objective."""

    def load_model(self, ref: str) -> EffkitModel:
        """Load an earlier stage's model or a model folder; an error when nothing can."""
        if self.resolve_model is not None:
            return self.resolve_model(ref)
        from effkit.models import load

        return load(ref)


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

    def progress(self, model: EffkitModel, ctx: StageContext) -> dict[str, float]:
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
