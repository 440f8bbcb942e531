"""Small pieces the click commands of crisscross share."""

from __future__ import annotations

from collections.abc import Callable


def default_device() -> str:
    """cuda when available, else cpu; a click default, so torch is imported only when a command runs
    (keeps `crisscross --help` fast)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def options(*decorators: Callable) -> Callable:
    """One decorator applying several click options, listed in the order --help shows them."""
    def apply(f: Callable) -> Callable:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply
