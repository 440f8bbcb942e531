"""What the DALI graph consumes, converted from the shared view parameters in this one place.

One clip enters the graph as named inputs (fed through ``external_source`` by
:mod:`~crisscross.data.dali.feeder`, or returned by the reader's ``fn.python_function`` in
:mod:`~crisscross.data.dali.reader`, in the order of :func:`input_names`):

==================  ==========================================================================
``jpeg0..2T-1``     uint8: the clip's distinct JPEG frames (views that share frames share them:
                    each is decoded once); slots past ``frames`` are empty and not decoded
``frames``          int32: how many of the slots hold a frame
``v1_frames``       int32 [T]: view 1's frames, as slot numbers (then ``v2_frames``)
``a1``, ``a2``      float32 [samples]: the views' waveforms in [-1, 1]
``v1_crop``         float32 [y, x, h, w]: crop box in source pixels, resized to ``crop_size``^2
                    (without multi-scale crop the graph takes the eval-style centre crop instead)
``v1_flip``         int32 0/1: horizontal flip
``v1_jitter``       float32 [brightness, contrast, saturation, hue] (1, 1, 1, 0 = none)
``v1_order``        int32[4]: order of the jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue)
``v1_gray``         int32 0/1: grayscale
``v1_sigma``        float32: gaussian blur sigma (0 = no blur), window ``blur_kernel``
``v1_cutout``       float32 [y, x, size]: square filled with the first frame's mean (size 0 = none)
``a1_volume``       float32: gain applied to the waveform before the spectrogram
``a1_warp``         float32 [centre, new centre]: time warp (centre = new centre: none)
``a1_masks``        float32 [start, width] * (freq_masks + time_masks): frequency, then time masks
``a1_crop``         float32 [i, j, h, w]: BYOL-A crop box on the zero canvas (spectrogram centred);
                    no crop = the spectrogram's own box (the identity)
==================  ==========================================================================

(and the same for ``v2_*``, ``a2_*``; the parameter inputs exist only when augmenting). With one
parameter set per frame (``VideoAugSettings.per_frame``) every ``v*_`` parameter has a leading
axis of T, one row per frame. Their meaning is that of
:class:`~crisscross.data.params.VideoAugParams` / :class:`~crisscross.data.params.AudioAugParams`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from crisscross import paper
from crisscross.data.params import AudioAugParams, ViewParams, frame_params
from crisscross.data.selection import Prepared
from crisscross.paper import AudioAugSettings, VideoAugSettings

VIEWS = ("1", "2")
VIDEO_INPUTS = {"crop": np.float32, "flip": np.int32, "jitter": np.float32, "order": np.int32,
                "gray": np.int32, "sigma": np.float32, "cutout": np.float32}
AUDIO_INPUTS = {"volume": np.float32, "warp": np.float32, "masks": np.float32, "crop": np.float32}
NO_FRAME = np.zeros(0, np.uint8)                  # an unused frame slot


class Selection(NamedTuple):
    """One clip as the graph takes it: its distinct JPEG frames (each decoded once), the two
    float32 waveforms, the views' parameters (None: no augmentation), and the indices of view 1's
    and view 2's frames among the JPEGs (None: the first half of the JPEGs is view 1, the second
    half view 2)."""

    jpegs: Sequence[bytes | np.ndarray]
    a1: np.ndarray
    a2: np.ndarray
    video: tuple[ViewParams, ViewParams] | None = None
    audio: tuple[AudioAugParams, AudioAugParams] | None = None
    v1: Sequence[int] | None = None
    v2: Sequence[int] | None = None

    def views(self) -> tuple[Sequence[int], Sequence[int]]:
        """The two views' frame indices into :attr:`jpegs`."""
        if self.v1 is not None and self.v2 is not None:
            return self.v1, self.v2
        half = len(self.jpegs) // 2
        return range(half), range(half, 2 * half)


def from_prepared(item: Prepared) -> Selection:
    """A prepared clip (the torch path's selection and parameters) in the graph's form."""
    raw = item.raw
    return Selection(raw.jpegs, np.asarray(raw.a1, np.float32) / 32768.0, np.asarray(raw.a2, np.float32) / 32768.0,
                     item.video, item.audio, raw.v1, raw.v2)


def from_batch(batch: dict[str, Any]) -> list[Selection]:
    """A batch of :func:`crisscross.data.loader.collate_raw` (tensors) in the graph's form."""
    offsets, first = batch["jpeg_offsets"].numpy(), batch["first"].tolist() + [len(batch["jpeg_offsets"]) - 1]
    jpeg, pcm = batch["jpeg"].numpy(), batch["pcm"].numpy().astype(np.float32) / 32768.0
    return [Selection([jpeg[offsets[k]:offsets[k + 1]] for k in range(first[i], first[i + 1])], pcm[i, 0], pcm[i, 1],
                      video, audio, batch["v1"][i].tolist(), batch["v2"][i].tolist())
            for i, (video, audio) in enumerate(zip(batch["video"], batch["audio"]))]


def jpeg_names(video_frames: int) -> list[str]:
    """The frame slots: as many as two views can need."""
    return [f"jpeg{i}" for i in range(2 * video_frames)]


def video_params_used(s: VideoAugSettings) -> list[str]:
    """The ``v*_`` inputs the graph consumes under these settings (an augmentation that is off
    has no input: DALI drops an unused input)."""
    on = {"crop": s.multi_scale_crop, "flip": s.flip_p > 0, "jitter": s.jitter_p > 0, "order": s.jitter_p > 0,
          "gray": s.grayscale_p > 0, "sigma": s.blur_p > 0, "cutout": s.cutout_p > 0 and s.cutout_max_size > 0}
    return [name for name in VIDEO_INPUTS if on[name]]


def audio_params_used(s: AudioAugSettings) -> list[str]:
    """The ``a*_`` inputs the graph consumes under these settings."""
    on = {"volume": tuple(s.volume) != (1.0, 1.0), "warp": s.time_warp, "masks": s.freq_masks + s.time_masks > 0,
          "crop": s.crop_p > 0}
    return [name for name in AUDIO_INPUTS if on[name]]


def input_names(video_frames: int, augment: bool = True, video: VideoAugSettings = paper.VIDEO_AUG,
                audio: AudioAugSettings = paper.AUDIO_AUG) -> list[str]:
    """The graph's inputs, in the order the reader's python_function returns them."""
    names = jpeg_names(video_frames) + ["frames", "v1_frames", "v2_frames", "a1", "a2"]
    if augment:
        names += [f"v{v}_{n}" for v in VIEWS for n in video_params_used(video)]
        names += [f"a{v}_{n}" for v in VIEWS for n in audio_params_used(audio)]
    return names


def canvas_size(s: AudioAugSettings, n_steps: int) -> tuple[int, int]:
    """BYOL-A's virtual crop canvas: (80, 301) for 80 x 201 and crop_canvas (1.0, 1.5)."""
    return int(s.n_mels * s.crop_canvas[0]), int(n_steps * s.crop_canvas[1])


def video_inputs(p: ViewParams) -> dict[str, np.ndarray]:
    """One video view's parameters as the graph's ``v*_`` inputs (without the prefix); a tuple of
    per-frame parameters gives one row per frame."""
    if frame_params(p) is not None:
        rows = [video_inputs(q) for q in frame_params(p)]
        return {name: np.stack([r[name] for r in rows]) for name in VIDEO_INPUTS}
    values = dict(crop=p.crop or (0, 0, 0, 0), flip=p.flip, jitter=p.jitter, order=p.jitter_order,
                  gray=p.grayscale, sigma=p.blur_sigma or 0.0, cutout=p.cutout or (0, 0, 0))
    return {name: np.asarray(values[name], dtype) for name, dtype in VIDEO_INPUTS.items()}


def audio_inputs(p: AudioAugParams, s: AudioAugSettings, n_steps: int) -> dict[str, np.ndarray]:
    """One audio view's parameters as the graph's ``a*_`` inputs (without the prefix): masks
    padded with empty ones to the settings' counts, no crop = the identity box, no time warp =
    a warp that keeps the centre where it is."""
    freq = list(p.freq_masks) + [(0, 0)] * (s.freq_masks - len(p.freq_masks))
    time = list(p.time_masks) + [(0, 0)] * (s.time_masks - len(p.time_masks))
    canvas_h, canvas_w = canvas_size(s, n_steps)
    whole = ((canvas_h - s.n_mels) // 2, (canvas_w - n_steps) // 2, s.n_mels, n_steps)
    values = dict(volume=p.volume, warp=p.time_warp or (n_steps // 2, n_steps // 2),
                  masks=[v for box in freq + time for v in box], crop=p.crop or whole)
    return {name: np.asarray(values[name], dtype) for name, dtype in AUDIO_INPUTS.items()}


def graph_inputs(clip: Selection, s: AudioAugSettings, n_steps: int, video_frames: int) -> dict[str, np.ndarray]:
    """Every input of one clip, keyed as :func:`input_names`."""
    slots, (v1, v2) = jpeg_names(video_frames), clip.views()
    if len(clip.jpegs) > len(slots) or not len(v1) == len(v2) == video_frames \
            or not 0 <= min(*v1, *v2) <= max(*v1, *v2) < len(clip.jpegs):
        raise ValueError(f"a clip for the DALI graph needs at most {len(slots)} JPEGs and two views of "
                         f"{video_frames} indices into them; got {len(clip.jpegs)} JPEGs, views {list(v1)}, {list(v2)}")
    out = {name: NO_FRAME for name in slots}
    out |= {name: np.frombuffer(j, np.uint8) for name, j in zip(slots, clip.jpegs)}
    out |= {"frames": np.asarray(len(clip.jpegs), np.int32), "v1_frames": np.asarray(v1, np.int32),
            "v2_frames": np.asarray(v2, np.int32),
            "a1": np.asarray(clip.a1, np.float32), "a2": np.asarray(clip.a2, np.float32)}
    for v, p in zip(VIEWS, clip.video or ()):
        out |= {f"v{v}_{k}": x for k, x in video_inputs(p).items()}
    for v, p in zip(VIEWS, clip.audio or ()):
        out |= {f"a{v}_{k}": x for k, x in audio_inputs(p, s, n_steps).items()}
    return out
