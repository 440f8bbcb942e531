"""What the DALI graph consumes, converted from the shared view parameters in this one place.

One clip enters the graph as named inputs (fed through ``external_source`` by
:mod:`~crisscross.data.dali.feeder`, or returned by the reader's ``fn.python_function`` in
:mod:`~crisscross.data.dali.reader`, in the order of :func:`input_names`):

==================  ==========================================================================
``v1_jpeg0..T-1``   uint8: view 1's JPEG frames (then ``v2_jpeg*``: view 2's)
``a1``, ``a2``      float32 [samples]: the views' waveforms in [-1, 1]
``v1_crop``         float32 [y, x, h, w]: crop box in source pixels, resized to ``crop_size``^2
``v1_flip``         int32 0/1: horizontal flip
``v1_jitter``       float32 [brightness, contrast, saturation, hue] (1, 1, 1, 0 = none)
``v1_order``        int32[4]: order of the jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue)
``v1_gray``         int32 0/1: grayscale
``v1_sigma``        float32: gaussian blur sigma (0 = no blur), window ``blur_kernel``
``v1_cutout``       float32 [y, x, size]: square filled with the first frame's mean (size 0 = none)
``a1_volume``       float32: gain applied to the waveform before the spectrogram
``a1_masks``        float32 [start, width] * (freq_masks + time_masks): frequency, then time masks
``a1_crop``         float32 [i, j, h, w]: BYOL-A crop box on the zero canvas (spectrogram centred);
                    no crop = the spectrogram's own box (the identity)
==================  ==========================================================================

(and the same for ``v2_*``, ``a2_*``; the parameter inputs exist only when augmenting). Their
meaning is that of :class:`~crisscross.data.params.VideoAugParams` /
:class:`~crisscross.data.params.AudioAugParams`; the one thing the graph lacks is the time warp
(off in pretraining), which :func:`check_settings` and :func:`audio_inputs` refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from crisscross.data.params import AudioAugParams, VideoAugParams
from crisscross.data.selection import Prepared
from crisscross.paper import AudioAugSettings

VIEWS = ("1", "2")
VIDEO_INPUTS = {"crop": np.float32, "flip": np.int32, "jitter": np.float32, "order": np.int32,
                "gray": np.int32, "sigma": np.float32, "cutout": np.float32}
AUDIO_INPUTS = {"volume": np.float32, "masks": np.float32, "crop": np.float32}
NO_TIME_WARP = "the DALI backend has no time warp (it is off in pretraining); use --backend torch"


class Selection(NamedTuple):
    """One clip as the graph takes it: ``2 * T`` JPEGs (view 1's frames, then view 2's), the two
    float32 waveforms, and the views' parameters (None: no augmentation)."""

    jpegs: Sequence[bytes]
    a1: np.ndarray
    a2: np.ndarray
    video: tuple[VideoAugParams, VideoAugParams] | None = None
    audio: tuple[AudioAugParams, AudioAugParams] | None = None


def from_prepared(item: Prepared) -> Selection:
    """A prepared clip (the torch path's selection and parameters) in the graph's form."""
    raw = item.raw
    return Selection([raw.jpegs[j] for j in raw.v1 + raw.v2], np.asarray(raw.a1, np.float32) / 32768.0,
                     np.asarray(raw.a2, np.float32) / 32768.0, item.video, item.audio)


def jpeg_names(video_frames: int) -> list[str]:
    """The frame inputs, view 1's then view 2's."""
    return [f"v{v}_jpeg{i}" for v in VIEWS for i in range(video_frames)]


def input_names(video_frames: int, augment: bool = True) -> list[str]:
    """The graph's inputs, in the order the reader's python_function returns them."""
    names = jpeg_names(video_frames) + [f"a{v}" for v in VIEWS]
    if augment:
        names += [f"v{v}_{n}" for v in VIEWS for n in VIDEO_INPUTS]
        names += [f"a{v}_{n}" for v in VIEWS for n in AUDIO_INPUTS]
    return names


def canvas_size(s: AudioAugSettings, n_steps: int) -> tuple[int, int]:
    """BYOL-A's virtual crop canvas: (80, 301) for 80 x 201 and crop_canvas (1.0, 1.5)."""
    return int(s.n_mels * s.crop_canvas[0]), int(n_steps * s.crop_canvas[1])


def check_settings(s: AudioAugSettings) -> None:
    """ValueError for audio settings the graph cannot apply (the time warp), before any batch."""
    if s.time_warp:
        raise ValueError(NO_TIME_WARP)


def video_inputs(p: VideoAugParams) -> dict[str, np.ndarray]:
    """One video view's parameters as the graph's ``v*_`` inputs (without the prefix)."""
    values = dict(crop=p.crop, flip=p.flip, jitter=p.jitter, order=p.jitter_order, gray=p.grayscale,
                  sigma=p.blur_sigma or 0.0, cutout=p.cutout or (0, 0, 0))
    return {name: np.asarray(values[name], dtype) for name, dtype in VIDEO_INPUTS.items()}


def audio_inputs(p: AudioAugParams, s: AudioAugSettings, n_steps: int) -> dict[str, np.ndarray]:
    """One audio view's parameters as the graph's ``a*_`` inputs (without the prefix): masks
    padded with empty ones to the settings' counts, no crop = the identity box."""
    if p.time_warp is not None:
        raise ValueError(NO_TIME_WARP)
    freq = list(p.freq_masks) + [(0, 0)] * (s.freq_masks - len(p.freq_masks))
    time = list(p.time_masks) + [(0, 0)] * (s.time_masks - len(p.time_masks))
    canvas_h, canvas_w = canvas_size(s, n_steps)
    whole = ((canvas_h - s.n_mels) // 2, (canvas_w - n_steps) // 2, s.n_mels, n_steps)
    values = dict(volume=p.volume, masks=[v for box in freq + time for v in box], crop=p.crop or whole)
    return {name: np.asarray(values[name], dtype) for name, dtype in AUDIO_INPUTS.items()}


def graph_inputs(clip: Selection, s: AudioAugSettings, n_steps: int) -> dict[str, np.ndarray]:
    """Every input of one clip, keyed as :func:`input_names`."""
    out = {name: np.frombuffer(j, np.uint8) for name, j in zip(jpeg_names(len(clip.jpegs) // 2), clip.jpegs)}
    out |= {"a1": np.asarray(clip.a1, np.float32), "a2": np.asarray(clip.a2, np.float32)}
    for v, p in zip(VIEWS, clip.video or ()):
        out |= {f"v{v}_{k}": x for k, x in video_inputs(p).items()}
    for v, p in zip(VIEWS, clip.audio or ()):
        out |= {f"a{v}_{k}": x for k, x in audio_inputs(p, s, n_steps).items()}
    return out
