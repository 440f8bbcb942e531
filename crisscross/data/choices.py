"""The data pipeline's named choices, listed once and checked once: the training config, the
loader, the DALI backend and the ``crisscross train`` options all read these."""

from __future__ import annotations

from collections.abc import Sequence

from crisscross import paper

# The relaxation modes of the two views' timing (defined in crisscross.data.views; paper Sec. 4.3).
MODES = ("none", "mild", "medium", "extreme", "mixed")
# Augmentation backends: the torch reference (crisscross.data.augment) and DALI (crisscross.data.dali).
BACKENDS = ("torch", "dali")
# Sec. 4.5 "Temporal Consistency": spatial augmentations drawn once per view, or per frame.
TEMPORAL_CONSISTENCY = ("view", "frame")


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


def check_augs(option: str, codes: Sequence[str], allowed: Sequence[str]) -> None:
    """ValueError unless every code is one of ``allowed`` (the Table 5 codes of ``option``)."""
    for code in codes:
        if code not in allowed:
            raise ValueError(f"unknown {option} code {code!r}; give a comma-separated subset of "
                             f"{','.join(allowed)} (or none)")


def check_video_augs(codes: Sequence[str]) -> None:
    """ValueError unless ``codes`` is a subset of :data:`crisscross.paper.VIDEO_AUG_CODES`."""
    check_augs("--video-aug", codes, paper.VIDEO_AUG_CODES)


def check_audio_augs(codes: Sequence[str]) -> None:
    """ValueError unless ``codes`` is a subset of :data:`crisscross.paper.AUDIO_AUG_CODES`."""
    check_augs("--audio-aug", codes, paper.AUDIO_AUG_CODES)
