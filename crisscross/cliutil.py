"""Small pieces the click commands of crisscross share."""

from __future__ import annotations

from collections.abc import Callable

import torch


def default_device() -> str:
    """cuda when available, else cpu (a click default: asked when a command runs, not at import)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def options(*decorators: Callable) -> Callable:
    """One decorator applying several click options, listed in the order --help shows them."""
    def apply(f: Callable) -> Callable:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


def check_device(ctx, param, value: str) -> str:
    """A click callback: ``value`` must name a torch device that exists here (one clear line if not)."""
    import click
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise click.BadParameter(f"{value!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(f"{value!r}: no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise click.BadParameter(f"{value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return value
