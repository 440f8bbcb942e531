"""Optimiser building blocks of CrissCross pretraining (paper Sec. 4.1, Appendix G.1, Table S10).

- :func:`param_groups`: four Adam groups (video backbone + projector, video predictor, audio
  backbone + projector, audio predictor); the backbone groups are ``"scheduled"``, the predictor
  groups keep a constant learning rate (Sec. 4.4: 10x the base LR works best).
- :class:`LARC`: layer-wise adaptive rate clipping around any optimiser, as NVIDIA apex's
  ``apex.parallel.LARC`` which the paper uses for its 2048 batches.
- :func:`warmup_cosine` / :func:`apply_lr`: linear warm-up from 0 then cosine to a final LR,
  set every iteration on the scheduled groups.
- :func:`build_optimizer`: the three together as the paper trains.

State lives in the wrapped optimiser only, so ``state_dict()`` / ``load_state_dict()`` round-trip
for checkpoint resume; the schedule is a pure function of the step number (torch's LR schedulers
accept :class:`LARC` too, it is a ``torch.optim.Optimizer``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from crisscross.models import CrissCross

GROUP_NAMES = ("video", "video_predictor", "audio", "audio_predictor")


def _params(*modules: nn.Module, exclude: Iterable[nn.Parameter] = ()) -> list[nn.Parameter]:
    seen = {id(p) for p in exclude}
    return [p for m in modules for p in m.parameters() if id(p) not in seen]


def param_groups(model: CrissCross, base_lr: float, predictor_lr: float,
                 weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """The four parameter groups, each a dict with ``name``, ``params``, ``lr``, ``weight_decay``.

    Backbone groups (``"video"``, ``"audio"``: backbone + projector) carry ``scheduled=True`` and
    start at ``base_lr``; predictor groups carry ``scheduled=False`` and keep ``predictor_lr``.
    With a common predictor (Table 3) the ``"audio_predictor"`` group is empty, since the one
    predictor already sits in ``"video_predictor"``.
    """
    video_pred = _params(model.video_predictor)
    spec = [
        ("video", _params(model.video_backbone, model.video_projector), base_lr, True),
        ("video_predictor", video_pred, predictor_lr, False),
        ("audio", _params(model.audio_backbone, model.audio_projector), base_lr, True),
        ("audio_predictor", _params(model.audio_predictor, exclude=video_pred), predictor_lr, False),
    ]
    return [dict(name=name, params=params, lr=lr, weight_decay=weight_decay, scheduled=scheduled)
            for name, params, lr, scheduled in spec]


class LARC(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Clipping around ``optimizer``, as NVIDIA apex's ``LARC`` does it.

    Before each inner step, every parameter ``w`` with gradient ``g`` (both non-zero) gets the
    adaptive rate ``r = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)``; with
    ``clip`` the gradient is then scaled by ``min(r / lr, 1)`` so that the effective rate is
    ``min(r, lr)`` ("clip" mode), otherwise by ``r`` ("scale" mode). Weight decay is folded into
    the gradient first (``g + weight_decay * w``, scaled together) and hidden from the inner
    optimiser during its step, as apex does.

    A :class:`torch.optim.Optimizer` that shares the wrapped optimiser's ``param_groups``,
    ``state`` and ``defaults`` (the same objects), so torch's LR schedulers, ``torch.amp.GradScaler``
    and checkpoints treat it like the optimiser itself; ``state_dict()`` is the inner one's.

    The rates of a group are computed together with foreach kernels (two ``_foreach_norm`` and a
    few vector operations per group, not ~16 small operations per parameter tensor: the full model
    has 198), without a host sync.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, trust_coefficient: float = 1e-3,
                 clip: bool = True, eps: float = 1e-8) -> None:
        self.optim = optimizer
        self.trust_coefficient = trust_coefficient
        self.clip = clip
        self.eps = eps
        super().__init__(optimizer.param_groups, optimizer.defaults)   # hooks and bookkeeping of Optimizer
        self._share()

    def _share(self) -> None:
        """Point this optimiser's groups, state and defaults at the wrapped one's."""
        self.param_groups, self.state, self.defaults = self.optim.param_groups, self.optim.state, self.optim.defaults

    def __repr__(self) -> str:
        return f"LARC(trust_coefficient={self.trust_coefficient}, clip={self.clip}, {self.optim!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optim.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optim.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optim.load_state_dict(state_dict)
        self._share()        # the inner optimiser made new group dicts and a new state

    @torch.no_grad()
    def _scale_gradients(self, group: dict[str, Any], weight_decay: float) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        w_norm, g_norm = torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(grads))
        rate = self.trust_coefficient * w_norm / (g_norm + weight_decay * w_norm + self.eps)
        if self.clip:
            # With lr == 0 apex's rate / lr is inf and the min picks 1: keep the gradient.
            rate = torch.clamp(rate / group["lr"], max=1.0) if group["lr"] > 0 else torch.ones_like(rate)
        # apex leaves a parameter with a zero weight or gradient norm untouched (no decay, no
        # scaling); torch.where does the same without a host sync per parameter.
        active = (w_norm > 0) & (g_norm > 0)
        scale = torch.where(active, rate, torch.ones_like(rate))
        torch._foreach_mul_(grads, list(scale.unbind()))          # g * scale
        if weight_decay:
            decay = torch.where(active, weight_decay * scale, torch.zeros_like(rate))
            torch._foreach_add_(grads, torch._foreach_mul(params, list(decay.unbind())))   # + wd * w * scale

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Scale every gradient by its clipped adaptive rate, then step the wrapped optimiser."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        decays = [group.get("weight_decay", 0.0) for group in self.optim.param_groups]
        for group, weight_decay in zip(self.optim.param_groups, decays):
            self._scale_gradients(group, weight_decay)
            group["weight_decay"] = 0.0  # already folded into the gradient
        try:
            self.optim.step()
        finally:
            for group, weight_decay in zip(self.optim.param_groups, decays):
                group["weight_decay"] = weight_decay
        return loss


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, lr_start: float, lr_end: float) -> float:
    """Learning rate at ``step`` (0-based): linear from 0 to ``lr_start`` over ``warmup_steps``,
    then half a cosine from ``lr_start`` down to ``lr_end`` at ``total_steps`` (held after it)."""
    if step < warmup_steps:
        return lr_start * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr_end + (lr_start - lr_end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def apply_lr(optimizer: torch.optim.Optimizer | LARC, step: int, total_steps: int, warmup_steps: int,
             lr_start: float, lr_end: float) -> float:
    """Set the LR of every ``scheduled`` group to :func:`warmup_cosine` at ``step``; return it.

    Groups without ``scheduled=True`` (the predictors) keep their constant LR.
    """
    lr = warmup_cosine(step, total_steps, warmup_steps, lr_start, lr_end)
    for group in optimizer.param_groups:
        if group.get("scheduled", False):
            group["lr"] = lr
    return lr


def build_optimizer(model: CrissCross, base_lr: float, predictor_lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999), larc: bool = False,
                    trust_coefficient: float = 1e-3) -> torch.optim.Adam | LARC:
    """Adam over :func:`param_groups`, wrapped in :class:`LARC` (clip mode) when ``larc``.

    The paper's values are in :data:`crisscross.paper.PRETRAIN` (Table S10).
    """
    adam = torch.optim.Adam(param_groups(model, base_lr, predictor_lr, weight_decay), lr=base_lr, betas=betas)
    return LARC(adam, trust_coefficient=trust_coefficient, clip=True) if larc else adam
