"""The baseline to beat: the original CrissCross / AVID data path, decoding source videos on the fly.

A re-implementation, from the facts in ../shared/reference/official-code.md, of what the official
code does for every clip at every step, followed by OUR torch augmentations (so the comparison with
the shard loader differs only in where the frames and samples come from):

1. the file list drops videos without an audio stream or shorter than 1.1 s (probed once, up front);
2. per clip, AVID's logic: draw the audio window's start, then the video window's start uniformly
   inside the audio window; ``mild`` (the default) takes one window 1.5x long per modality and
   splits it into the two views (video views 4 frames apart, audio views 1 s apart);
3. seek the container to the video start (lands on the keyframe before it), decode, keep the frames
   nearest to a 16 fps grid; seek again to the audio start, decode, resample to 16 kHz mono
   ``s16p`` with PyAV's AudioResampler, trim, divide by the int16 maximum;
4. augment both views in the DataLoader worker (``__getitem__``), as the original's transforms do.

Two small liberties, both in the baseline's favour: one container serves both modalities (the
original opens the file once per modality), and only the frames kept on the grid are converted to
RGB arrays. PyAV's decoder keeps its default threading, as in the original.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from crisscross import paper
from crisscross.data.augment import augment_audio_batch, augment_video_batch
from crisscross.data.params import draw_audio_params, draw_video_params

# Length of the window decoded per modality, in base windows: one window augmented twice (none),
# two windows overlapping by half (mild, the default), two windows back to back (medium).
WINDOW_FACTOR = {"none": 1.0, "mild": 1.5, "medium": 2.0}
MIN_SECONDS = 1.1           # the original drops shorter videos


@dataclass(frozen=True)
class SourceClip:
    """A segment [start, end) seconds of a source video file, read on the fly."""

    path: str
    start: float
    end: float
    key: str = ""


def probe(path: str) -> tuple[float, bool]:
    """(duration in seconds, has an audio stream) of a media file, from its container header."""
    with av.open(path) as c:
        duration = c.duration / av.time_base if c.duration else 0.0
        return duration, bool(c.streams.audio)


def usable_clips(clips: Sequence[SourceClip]) -> list[SourceClip]:
    """Drop clips of files without audio and clips shorter than the original's 1.1 s minimum."""
    audio = {p: probe(p)[1] for p in {c.path for c in clips}}
    return [c for c in clips if audio[c.path] and c.end - c.start >= MIN_SECONDS]


def clips_from_shards(url: str) -> list[SourceClip]:
    """The source segments behind every clip of the shards at ``url`` (meta ``source``/``segment``),
    so the baseline reads exactly the clips the shard loader reads, from the original files."""
    from avshards.reader import open_shards

    return [SourceClip(c.meta["source"], *map(float, c.meta["segment"]), c.key) for c in open_shards(url)]


def decode_video(container: av.container.InputContainer, start: float, count: int,
                 fps: int = paper.FPS) -> np.ndarray:
    """``count`` RGB frames [count, H, W, 3] uint8: for each time ``start + k / fps``, the decoded
    frame nearest to it (the last frame repeats past the end of the video)."""
    stream = container.streams.video[0]
    container.seek(int(start * av.time_base))          # backward to the keyframe before `start`
    grid = [start + k / fps for k in range(count)]
    kept: list[np.ndarray] = []
    prev = prev_t = None
    for frame in container.decode(stream):
        t = float(frame.pts * frame.time_base)
        while len(kept) < count and t >= grid[len(kept)]:
            # the grid time lies between the previous frame and this one: keep the nearer
            nearer_prev = prev is not None and grid[len(kept)] - prev_t < t - grid[len(kept)]
            kept.append(prev.to_ndarray(format="rgb24") if nearer_prev else frame.to_ndarray(format="rgb24"))
        if len(kept) == count:
            break
        prev, prev_t = frame, t
    if not kept and prev is not None:
        kept.append(prev.to_ndarray(format="rgb24"))
    if not kept:
        raise ValueError(f"no video frame decoded from {container.name} at {start:.2f} s")
    kept += [kept[-1]] * (count - len(kept))
    return np.stack(kept)


def decode_audio(container: av.container.InputContainer, start: float, samples: int,
                 rate: int = paper.SAMPLE_RATE) -> np.ndarray:
    """``samples`` mono float32 samples from ``start`` s: decoded, resampled to ``rate`` Hz
    ``s16p`` mono by PyAV, divided by the int16 maximum; zero-padded past the end."""
    stream = container.streams.audio[0]
    container.seek(int(start * av.time_base))
    resampler = av.AudioResampler(format="s16p", layout="mono", rate=rate)
    end = start + samples / rate
    chunks, first = [], None
    for frame in container.decode(stream):
        t = frame.pts * frame.time_base
        if t + Fraction(frame.samples, frame.sample_rate) < start:
            continue
        if t > end:
            break
        first = t if first is None else first
        frame.pts = None                                 # the resampler re-times its output
        chunks += [f.to_ndarray() for f in resampler.resample(frame)]
    if not chunks:
        return np.zeros(samples, np.float32)
    pcm = np.concatenate(chunks, axis=1)[0]
    skip = max(0, int((start - float(first)) * rate))
    pcm = pcm[skip:skip + samples]
    out = np.zeros(samples, np.float32)
    out[:len(pcm)] = pcm / np.iinfo(np.int16).max
    return out


class OnTheFlyTwoViews(Dataset):
    """Map-style dataset: item ``i`` = two augmented views of ``clips[i % len(clips)]``, decoded
    from the source file on the fly -> dict(v1, v2 [3,T,S,S], a1, a2 [1,F,T], key).

    ``epoch_size`` (default: one visit per clip) lets a short list stand for a long epoch; the
    draws of item ``i`` are a pure function of (seed, epoch, i).
    """

    def __init__(self, clips: Sequence[SourceClip], mode: str = "mild", seed: int = 0,
                 epoch_size: int | None = None, video_frames: int = paper.VIDEO_FRAMES,
                 audio_seconds: float = paper.AUDIO_SECONDS,
                 video_settings: paper.VideoAugSettings = paper.VIDEO_AUG,
                 audio_settings: paper.AudioAugSettings = paper.AUDIO_AUG):
        if mode not in WINDOW_FACTOR:
            raise ValueError(f"the baseline implements the modes {', '.join(WINDOW_FACTOR)}, not {mode!r}")
        if not clips:
            raise ValueError("no usable source clips (every file lacks audio or is shorter than 1.1 s)")
        self.clips, self.mode, self.seed, self.epoch = list(clips), mode, seed, 0
        self.size = epoch_size or len(self.clips)
        self.video_frames, self.audio_samples = video_frames, int(round(audio_seconds * paper.SAMPLE_RATE))
        self.video_settings, self.audio_settings = video_settings, audio_settings

    def __len__(self) -> int:
        return self.size

    def windows(self, clip: SourceClip, rng: np.random.Generator) -> tuple[float, float]:
        """(video start, audio start) in seconds of this clip's decoded windows (AVID's logic)."""
        factor = WINDOW_FACTOR[self.mode]
        audio_len = factor * self.audio_samples / paper.SAMPLE_RATE
        video_len = factor * self.video_frames / paper.FPS
        a0 = clip.start + rng.uniform(0, max(0.0, clip.end - clip.start - audio_len))
        v0 = a0 + rng.uniform(0, max(0.0, min(audio_len, clip.end - a0) - video_len))
        return v0, a0

    def decode(self, i: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """Item ``i``'s decoded windows (frames [T,H,W,3] uint8, mono float wave) and its generator,
        ready for the augmentation draws."""
        clip = self.clips[i % len(self.clips)]
        rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(clip.key.encode()), i])
        v0, a0 = self.windows(clip, rng)
        factor = WINDOW_FACTOR[self.mode]
        with av.open(clip.path) as container:
            frames = decode_video(container, v0, int(round(factor * self.video_frames)))
            wave = decode_audio(container, a0, int(round(factor * self.audio_samples)))
        return frames, wave, rng

    def __getitem__(self, i: int) -> dict:
        return self.augment(*self.decode(i)) | {"key": self.clips[i % len(self.clips)].key}

    def augment(self, frames: np.ndarray, wave: np.ndarray, rng: np.random.Generator) -> dict:
        """Split the decoded windows into the two views and augment them (our torch code)."""
        n, m = self.video_frames, self.audio_samples
        dv, da = len(frames) - n, len(wave) - m            # view 2 ends where the window ends
        frames = torch.from_numpy(frames)
        h, w = frames.shape[1:3]
        vs = self.video_settings
        video = augment_video_batch([frames[:n], frames[dv:dv + n]],
                                    [draw_video_params(rng, h, w, vs), draw_video_params(rng, h, w, vs)], vs)
        steps = m // self.audio_settings.hop_length + 1
        aparams = [draw_audio_params(rng, self.audio_settings.n_mels, steps, self.audio_settings) for _ in "12"]
        audio = augment_audio_batch(torch.from_numpy(np.stack([wave[:m], wave[da:da + m]])), aparams,
                                    self.audio_settings)
        return {"v1": video[0], "v2": video[1], "a1": audio[0], "a2": audio[1]}


def make_baseline_loader(clips: Sequence[SourceClip], batch_size: int, num_workers: int = 2,
                         mode: str = "mild", seed: int = 0, epoch_size: int | None = None) -> DataLoader:
    """A shuffled DataLoader over :class:`OnTheFlyTwoViews` (decode + augment in the workers),
    batches ``{v1, v2, a1, a2, key}`` like :func:`crisscross.data.loader.make_train_loader`'s."""
    dataset = OnTheFlyTwoViews(clips, mode, seed, epoch_size)
    extra = {"prefetch_factor": 4} if num_workers else {}
    return DataLoader(dataset, batch_size, shuffle=True, num_workers=num_workers, drop_last=True,
                      generator=torch.Generator().manual_seed(seed), **extra)
