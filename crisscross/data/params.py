"""What is random about one view, drawn once, in one place: both augmentation backends apply these.

Random augmentations follow torchvision's "draw parameters, then apply" pattern: ``draw_*_params``
uses a NumPy generator on the host and returns a small frozen dataclass; the torch backend
(:mod:`crisscross.data.augment`) applies it with torch ops and the DALI backend
(:mod:`crisscross.data.dali`) with its operators, after :mod:`crisscross.data.dali.inputs` converts
it to the graph's inputs. One draw covers every frame of a view (temporal consistency), or one
draw per frame with ``settings.per_frame`` (the paper's "temporarily random" ablation, Sec. 4.5);
the two views of a clip get independent draws. All settings come from :mod:`crisscross.paper`
(``VIDEO_AUG``, ``AUDIO_AUG``, ...); docs/data.md has the table of what each value means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crisscross import paper
from crisscross.paper import AudioAugSettings, VideoAugSettings

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def audio_steps(audio_samples: int, settings: AudioAugSettings = paper.AUDIO_AUG) -> int:
    """Log-mel steps of ``audio_samples`` (a centred STFT): 32000 samples -> 201."""
    return audio_samples // settings.hop_length + 1


@dataclass(frozen=True)
class VideoAugParams:
    """Everything random about one video view; identity values mean "not applied"."""

    crop: tuple[int, int, int, int] | None              # top, left, height, width in source pixels;
    #                                                     None: no multi-scale crop (eval-style centre crop)
    flip: bool = False
    jitter: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation factors; hue shift
    jitter_order: tuple[int, int, int, int] = (0, 1, 2, 3)  # indices into JITTER_OPS
    grayscale: bool = False
    blur_sigma: float | None = None                     # None: no blur
    cutout: tuple[int, int, int] | None = None          # top, left, side in output pixels

    @classmethod
    def identity(cls, height: int, width: int) -> "VideoAugParams":
        """Whole frame resized, nothing else (for tests and backend parity checks)."""
        return cls(crop=(0, 0, height, width))


# A view's parameters: one set for all its frames, or one per frame (``VideoAugSettings.per_frame``).
ViewParams = VideoAugParams | tuple[VideoAugParams, ...]


def frame_params(p: ViewParams) -> list[VideoAugParams] | None:
    """The per-frame parameter sets of a view, or None when one set covers every frame (a
    DataLoader hands tuples over as lists)."""
    return list(p) if isinstance(p, (tuple, list)) else None


@dataclass(frozen=True)
class AudioAugParams:
    """Everything random about one audio view; the defaults mean "not applied"."""

    volume: float = 1.0
    freq_masks: tuple[tuple[int, int], ...] = ()        # (first mel bin, width) per mask
    time_masks: tuple[tuple[int, int], ...] = ()        # (first step, width) per mask
    crop: tuple[int, int, int, int] | None = None       # top, left, height, width on the canvas
    time_warp: tuple[int, int] | None = None            # (centre step, its new position)


def _random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                             scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params with a NumPy generator."""
    area = height * width
    log_ratio = np.log(ratio)
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(*log_ratio))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    # fallback: the largest centre crop within the ratio range
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_video_params(rng: np.random.Generator, height: int, width: int,
                      settings: VideoAugSettings = paper.VIDEO_AUG) -> VideoAugParams:
    """Draw one video view's parameters for frames of ``height`` x ``width`` pixels."""
    s = settings
    crop = _random_resized_crop_box(rng, height, width, s.crop_scale, s.crop_ratio) if s.multi_scale_crop else None
    flip = bool(rng.random() < s.flip_p)
    jitter, order = (1.0, 1.0, 1.0, 0.0), (0, 1, 2, 3)
    if rng.random() < s.jitter_p:
        jitter = (float(rng.uniform(max(0.0, 1 - s.brightness), 1 + s.brightness)),
                  float(rng.uniform(max(0.0, 1 - s.contrast), 1 + s.contrast)),
                  float(rng.uniform(max(0.0, 1 - s.saturation), 1 + s.saturation)),
                  float(rng.uniform(-s.hue, s.hue)))
        order = tuple(int(i) for i in rng.permutation(4))
    grayscale = bool(rng.random() < s.grayscale_p)
    blur = float(rng.uniform(*s.blur_sigma)) if rng.random() < s.blur_p else None
    cutout = None
    if rng.random() < s.cutout_p and s.cutout_max_size > 0:
        side = int(rng.integers(1, s.cutout_max_size + 1))
        cutout = (int(rng.integers(0, s.crop_size - side + 1)),
                  int(rng.integers(0, s.crop_size - side + 1)), side)
    return VideoAugParams(crop, flip, jitter, order, grayscale, blur, cutout)


def draw_view_params(rng: np.random.Generator, height: int, width: int, frames: int,
                     settings: VideoAugSettings = paper.VIDEO_AUG) -> ViewParams:
    """One video view's parameters: one draw for its ``frames`` frames, or one draw per frame
    (a tuple, in frame order) when ``settings.per_frame``."""
    if settings.per_frame:
        return tuple(draw_video_params(rng, height, width, settings) for _ in range(frames))
    return draw_video_params(rng, height, width, settings)


def draw_audio_params(rng: np.random.Generator, n_mels: int = 80, n_steps: int = 201,
                      settings: AudioAugSettings = paper.AUDIO_AUG) -> AudioAugParams:
    """Draw one audio view's parameters for a ``n_mels`` x ``n_steps`` log-mel."""
    s = settings
    volume = float(rng.uniform(*s.volume))
    warp = None
    if s.time_warp and n_steps > 2 * s.time_warp_window:
        w = s.time_warp_window
        centre = int(rng.integers(w, n_steps - w))
        warp = (centre, int(rng.integers(centre - w, centre + w)) + 1)

    def masks(count: int, max_width: int, size: int) -> tuple[tuple[int, int], ...]:
        out = []
        for _ in range(count):
            width = int(rng.integers(0, max_width))          # randint[0, max)
            out.append((int(rng.integers(0, size - width + 1)), width))
        return tuple(out)

    freq = masks(s.freq_masks, s.freq_mask_max, n_mels)
    time = masks(s.time_masks, s.time_mask_max, n_steps)
    crop = None
    if rng.random() < s.crop_p:
        canvas_h, canvas_w = int(s.crop_canvas[0] * n_mels), int(s.crop_canvas[1] * n_steps)
        h = int(np.clip(int(rng.uniform(*s.crop_scale) * n_mels), 1, canvas_h))
        w = int(np.clip(int(rng.uniform(*s.crop_scale) * n_steps), 1, canvas_w))
        crop = (int(rng.integers(0, canvas_h - h + 1)), int(rng.integers(0, canvas_w - w + 1)), h, w)
    return AudioAugParams(volume, freq, time, crop, warp)
