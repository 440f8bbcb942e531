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
