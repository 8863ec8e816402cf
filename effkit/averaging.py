"""Weight averaging: an exponential moving average of a model's weights during a stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from effkit.errors import RunError


class WeightAverage:
    """Exponential moving average of a model's floating-point state (Polyak averaging).

    After update ``t`` the average moves towards the weights by ``1 - d_t`` with
    ``d_t = min(decay, (1 + t) / (10 + t))``: early on, when the weights still move fast, the
    average follows them closely, and it settles on ``decay`` once ``t`` is large. Integer
    entries (position ids, counters) are copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        if current.keys() != self.state.keys():
            changed = sorted(current.keys() ^ self.state.keys())
            raise RunError(
                f"the model's parameters changed during a stage with ema_decay: "
                f"{', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}",
                hint="weight averaging needs the same parameters throughout the stage",
            )
        for name, value in current.items():
            average = self.state[name]
            if average.is_floating_point():
                average.lerp_(value.detach().to(average.dtype), 1.0 - keep)
            else:
                average.copy_(value)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Run the block with the averaged weights in ``model``, then put the live ones back."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(live)
