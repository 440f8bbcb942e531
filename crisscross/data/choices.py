"""The data pipeline's named choices, listed once and checked once: the training config, the
loader, the DALI backend and the ``crisscross train`` options all read these."""

from __future__ import annotations

from collections.abc import Sequence

# The relaxation modes of the two views' timing (defined in crisscross.data.views; paper Sec. 4.3).
MODES = ("none", "mild", "medium", "extreme", "mixed")
# Augmentation backends: the torch reference (crisscross.data.augment) and DALI (crisscross.data.dali).
BACKENDS = ("torch", "dali")


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """Raise ValueError with one sentence naming ``what``, the bad ``value`` and the choices."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def check_mode(mode: str) -> None:
    """ValueError unless ``mode`` is one of :data:`MODES`."""
    check_choice("view mode", mode, MODES)


def check_backend(backend: str) -> None:
    """ValueError unless ``backend`` is one of :data:`BACKENDS`."""
    check_choice("backend", backend, BACKENDS)
