"""One clip -> its two views: where they start, the bytes they need, and their parameters.

This is the worker-side half of every training path (the torch backend on CPU or CUDA, DALI fed
through ``external_source``, and DALI's own shard reader): :class:`PrepareClip` turns an
:class:`avshards.format.AVClip` into a :class:`Prepared` with one generator per clip,
:func:`clip_rng` (seed, epoch, key, visit), drawing in a fixed order: the view starts
(:func:`crisscross.data.views.sample_views`), then the parameters of video views 1 and 2 and of
audio views 1 and 2 (:mod:`crisscross.data.params`). So the same clip, seed and epoch give the same
windows and parameters on every path, worker, device and resume.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from avshards.format import AVClip
from crisscross import paper
from crisscross.data.params import AudioAugParams, ViewParams, audio_steps, draw_audio_params, draw_view_params
from crisscross.data.views import ViewStarts, sample_views
from crisscross.paper import AudioAugSettings, VideoAugSettings


class RawTwoViews(NamedTuple):
    """What a worker hands over for one clip: the encoded frames of both views (each needed frame
    once) and the two audio slices. ``v1[j]`` is the position in ``jpegs`` of view 1's frame j."""

    key: str
    starts: ViewStarts
    size: tuple[int, int]               # (height, width) of the frames
    jpegs: tuple[bytes, ...]            # distinct frames, in frame order
    v1: tuple[int, ...]
    v2: tuple[int, ...]
    a1: np.ndarray                      # int16 [audio_samples], zero-padded past the clip's end
    a2: np.ndarray


class Prepared(NamedTuple):
    """A selected clip plus the augmentation parameters of its two views."""

    raw: RawTwoViews
    video: tuple[ViewParams, ViewParams]
    audio: tuple[AudioAugParams, AudioAugParams]


def clip_rng(seed: int, epoch: int, key: str, visit: int = 0) -> np.random.Generator:
    """The generator of one clip's views and augmentations: a pure function of (seed, epoch, key,
    visit), so any worker, device or resumed run draws the same (crc32 is stable across processes).
    ``visit`` is the pass over the data the clip was read in, counted from the start of epoch 0 as
    avshards.stream counts it: the epoch itself when an epoch is one pass, and several passes
    per epoch when the epoch size is larger than the data (Table S10's 220K for Kinetics-Sound)."""
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode()), visit])


def window_indices(start: int, count: int, length: int) -> list[int]:
    """``count`` frame indices from ``start``; past the clip's end the last frame repeats."""
    return [min(start + i, length - 1) for i in range(count)]


def audio_window(clip: AVClip, start: int, count: int) -> np.ndarray:
    """``count`` int16 samples from ``start``, zero-padded past the clip's end."""
    pcm = clip.pcm(start, count)            # a read-only view of the shard's bytes
    return pcm.copy() if len(pcm) == count else np.pad(pcm, (0, count - len(pcm)))


def frame_size(clip: AVClip) -> tuple[int, int]:
    """(height, width) from the metadata, else from the first JPEG's header (no decode)."""
    if clip.meta.get("height") and clip.meta.get("width"):
        return int(clip.meta["height"]), int(clip.meta["width"])
    width, height = Image.open(io.BytesIO(clip.jpeg([0])[0])).size
    return height, width


def select_two_views(clip: AVClip, mode: str, rng: np.random.Generator,
                     video_frames: int = paper.VIDEO_FRAMES,
                     audio_samples: int = int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE)) -> RawTwoViews:
    """Pick the two views of ``clip`` (see :func:`crisscross.data.views.sample_views`) and read only
    their JPEG bytes and audio slices. Short clips repeat their last frame and zero-pad audio."""
    starts = sample_views(clip.num_frames, clip.num_samples, mode, rng, video_frames, audio_samples,
                          fps=int(clip.fps), sample_rate=clip.sample_rate)
    i1 = window_indices(starts.v1, video_frames, clip.num_frames)
    i2 = window_indices(starts.v2, video_frames, clip.num_frames)
    distinct = sorted(set(i1) | set(i2))            # overlapping frames are read and decoded once
    where = {f: j for j, f in enumerate(distinct)}
    return RawTwoViews(clip.key, starts, frame_size(clip), tuple(clip.jpeg(distinct)),
                       tuple(where[f] for f in i1), tuple(where[f] for f in i2),
                       audio_window(clip, starts.a1, audio_samples), audio_window(clip, starts.a2, audio_samples))


@dataclass
class PrepareClip:
    """The worker-side map: AVClip -> :class:`Prepared` (None for a clip without audio or frames).
    Picklable; the loader sets ``epoch`` before workers start, DALI's reader passes it to
    :meth:`draw`.

    The draws depend on ``clip.visit``, the pass over the data the stream read the clip in (a
    fixed epoch size larger than the data reads clips several times per epoch, each time with
    fresh views); it is a function of the position, so a resumed epoch draws the same.
    """

    mode: str = "mild"
    seed: int = 0
    epoch: int = 0
    video_frames: int = paper.VIDEO_FRAMES
    audio_samples: int = int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE)
    video_settings: VideoAugSettings = paper.VIDEO_AUG
    audio_settings: AudioAugSettings = paper.AUDIO_AUG

    def __call__(self, clip: AVClip) -> Prepared | None:
        # the stream stamps each clip with the epoch it was read in (workers outlive epochs)
        return self.draw(clip, self.epoch if clip.epoch is None else clip.epoch, clip.visit)

    def draw(self, clip: AVClip, epoch: int, visit: int) -> Prepared | None:
        """``clip``'s views and parameters when read in ``epoch``, pass ``visit`` (:func:`clip_rng`)."""
        if not clip.has_audio or clip.num_samples == 0 or clip.num_frames == 0:
            return None             # the stream skips and counts it, and reads on to keep parts equal
        rng = clip_rng(self.seed, epoch, clip.key, visit)
        raw = select_two_views(clip, self.mode, rng, self.video_frames, self.audio_samples)
        h, w = raw.size
        video = tuple(draw_view_params(rng, h, w, self.video_frames, self.video_settings) for _ in range(2))
        steps, n_mels = audio_steps(self.audio_samples, self.audio_settings), self.audio_settings.n_mels
        audio = (draw_audio_params(rng, n_mels, steps, self.audio_settings),
                 draw_audio_params(rng, n_mels, steps, self.audio_settings))
        return Prepared(raw, video, audio)
