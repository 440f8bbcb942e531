"""The two-view sampler: where each of the two audio-visual views of a clip starts.

A view ``i`` is a video window ``v_i`` (``video_frames`` frames) and an audio window ``a_i``
(``audio_samples`` samples). As in the paper's text (Sec. 3), ``v_i`` and ``a_i`` start at the
same time ``t_i``: unlike the original code (AVID's logic, which draws the video start anywhere
inside the audio window), a synchronous pair here is aligned to the sample. Start times live on
the video frame grid (1/16 s), so the audio start ``round(t * sample_rate / fps)`` is exact.

The relaxation modes (paper Sec. 4.3, names of the official code in brackets; docs/data.md has
a picture of each)::

    none    [same_timestamp]  t2 = t1: one window, augmented twice
    mild    [overlapped]      each modality's second window starts half of that modality's
                              window later (video +4 frames, audio +1 s): 50% overlap
    medium  [adjacent]        each modality's second window starts right after the first
    extreme [far_apart]       t2 = t1 + half the usable duration (3 s on a 10 s clip):
                              view 1 early in the clip, view 2 late
    mixed   [random]          t1 and t2 drawn independently

In ``mild`` and ``medium`` the offset is per modality by definition, so the second video and
audio windows start at different times (audio 0.75 s / 1.5 s later); in ``none``, ``extreme``
and ``mixed`` both views are synchronous. The usable duration of ``extreme`` is the room the two
windows leave in the clip: its duration (the shorter of its video and audio) minus twice the
longer window, as in the official code (10 s - 2 x 2 s = 6 s, so t2 = t1 + 3 s). ``mixed`` and
``none`` draw starts anywhere the windows fit.

Short clips: when a clip is too short for the windows a mode needs, the first start is 0 and
the offsets keep their definition (``extreme`` and ``mixed`` degrade to ``t2 = t1 = 0``); the
loader then repeats the last frame for frame indices past the end and zero-pads the audio
(see :func:`crisscross.data.loader.select_two_views`). Starts are never negative.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from crisscross import paper
from crisscross.data.choices import check_mode


class ViewStarts(NamedTuple):
    """First frame of each video view and first audio sample of each audio view."""

    v1: int
    v2: int
    a1: int
    a2: int


def _modality_offsets(mode: str, video_frames: int, audio_samples: int) -> tuple[int, int]:
    """(video, audio) offset of view 2 from view 1 for the per-modality modes."""
    if mode == "mild":
        return video_frames // 2, audio_samples // 2
    if mode == "medium":
        return video_frames, audio_samples
    return 0, 0


def sample_views(num_frames: int, num_samples: int, mode: str, rng: np.random.Generator,
                 video_frames: int = paper.VIDEO_FRAMES,
                 audio_samples: int = int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE),
                 fps: int = paper.FPS, sample_rate: int = paper.SAMPLE_RATE) -> ViewStarts:
    """Draw the starts of the two views of a clip with ``num_frames`` frames and ``num_samples``
    audio samples for relaxation ``mode`` (one of :data:`crisscross.data.choices.MODES`). Pure:
    same ``rng`` state, same result. See the module docstring for the modes and short clips."""
    check_mode(mode)
    spf = sample_rate / fps                                  # audio samples per video frame

    def last_start(extra_v: int, extra_a: int) -> int:
        """Latest start (in frames) whose windows plus extras fit both streams; >= 0."""
        by_video = num_frames - video_frames - extra_v
        by_audio = int(np.floor((num_samples - audio_samples - extra_a) / spf))
        return max(0, min(by_video, by_audio))

    def audio_at(t: int) -> int:
        return int(round(t * spf))

    if mode in ("mild", "medium"):
        dv, da = _modality_offsets(mode, video_frames, audio_samples)
        t1 = int(rng.integers(0, last_start(dv, da) + 1))
        return ViewStarts(t1, t1 + dv, audio_at(t1), audio_at(t1) + da)
    usable = last_start(0, 0)                                 # latest start of one view
    if mode == "none":
        t1 = t2 = int(rng.integers(0, usable + 1))
    elif mode == "extreme":
        window = max(video_frames, int(np.ceil(audio_samples / spf)))  # longer window, in frames
        half = max(0, usable - window) // 2
        t1 = int(rng.integers(0, usable - half + 1))
        t2 = t1 + half
    else:  # mixed
        t1, t2 = (int(t) for t in rng.integers(0, usable + 1, size=2))
    return ViewStarts(t1, t2, audio_at(t1), audio_at(t2))
