"""The training loader: avshards stream -> two-view selection -> augmentation backend -> batches.

Stages (each a small function, composed by :func:`make_train_loader`)::

    DataLoader worker                                      | where the backend says
    clip --select_two_views--> RawTwoViews (16 JPEG bytes, | decode 16 JPEGs (torchvision.io.decode_jpeg,
          two int16 audio slices) + drawn parameters       | nvJPEG on "cuda"), augment_video_batch,
          (pure function of seed, epoch, clip key)         | augment_audio_batch -> {v1, v2, a1, a2}

``device="cpu"`` (default): the second half runs in the workers (inside the collate function), so
the main process receives finished tensors. ``device="cuda"``: workers only move bytes and draw
parameters; the main process decodes a whole batch with nvJPEG and augments on the GPU.
``decode_in_workers=False`` runs that split on the CPU too, which is how CI exercises it.
``backend="dali"`` hands the same worker-side selection to :mod:`crisscross.data.dali_backend`.

Clips without audio are skipped in the worker and counted (``stats["skipped_no_audio"]``); the
stream (:class:`avshards.stream.ShardStream`) then reads on, wrapping around the worker's part, so
every rank still gets the same number of full batches, and the skips are a pure function of the
data, so a resumed epoch skips the same clips.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from avshards.format import AVClip
from avshards.stream import Lacks, ShardStream, StreamLoader
from crisscross import paper
from crisscross.data.augment import (AudioAugParams, VideoAugParams, augment_audio_batch,
                                     augment_video_batch, draw_audio_params, draw_video_params)
from crisscross.data.views import MODES, ViewStarts, sample_views
from crisscross.paper import AudioAugSettings, VideoAugSettings

BACKENDS = ("torch", "dali")


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
    video: tuple[VideoAugParams, VideoAugParams]
    audio: tuple[AudioAugParams, AudioAugParams]


def clip_rng(seed: int, epoch: int, key: str, visit: int = 0) -> np.random.Generator:
    """The generator of one clip's views and augmentations: a pure function of (seed, epoch, key,
    visit), so any worker, device or resumed run draws the same (crc32 is stable across processes).
    ``visit`` counts earlier reads of the same clip in the epoch (a fixed epoch size larger than
    the data, e.g. Table S10's 220K for Kinetics-Sound, reads every clip several times)."""
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
    from PIL import Image

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
    Picklable; :class:`TrainLoader` sets ``epoch`` before workers start.

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
        if not clip.has_audio or clip.num_samples == 0 or clip.num_frames == 0:
            return None             # the stream skips and counts it, and reads on to keep parts equal
        rng = clip_rng(self.seed, self.epoch if clip.epoch is None else clip.epoch, clip.key, clip.visit)
        raw = select_two_views(clip, self.mode, rng, self.video_frames, self.audio_samples)
        h, w = raw.size
        video = (draw_video_params(rng, h, w, self.video_settings), draw_video_params(rng, h, w, self.video_settings))
        steps = self.audio_samples // self.audio_settings.hop_length + 1
        n_mels = self.audio_settings.n_mels
        audio = (draw_audio_params(rng, n_mels, steps, self.audio_settings),
                 draw_audio_params(rng, n_mels, steps, self.audio_settings))
        return Prepared(raw, video, audio)


def decode_jpegs(jpegs: Sequence[bytes], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Decode JPEG bytes to uint8 [3, H, W] tensors on ``device`` (one nvJPEG batch on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    if not data:
        return []
    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def augment_prepared(items: Sequence[Prepared], device: str | torch.device = "cpu",
                     video_settings: VideoAugSettings = paper.VIDEO_AUG,
                     audio_settings: AudioAugSettings = paper.AUDIO_AUG) -> dict[str, torch.Tensor]:
    """Decode and augment prepared clips on ``device`` -> {v1, v2 [B,3,T,S,S], a1, a2 [B,1,F,T]}."""
    frames = decode_jpegs([j for it in items for j in it.raw.jpegs], device)
    clips1, clips2, first = [], [], 0
    for it in items:
        own = frames[first:first + len(it.raw.jpegs)]
        first += len(it.raw.jpegs)
        clips1.append(torch.stack([own[j] for j in it.raw.v1]))
        clips2.append(torch.stack([own[j] for j in it.raw.v2]))
    # np.asarray: a DataLoader may have turned the slices into tensors on the way
    waves = torch.from_numpy(np.stack([np.stack([np.asarray(it.raw.a1), np.asarray(it.raw.a2)]) for it in items]))
    waves = waves.to(device, non_blocking=True).float() / 32768.0        # [B, 2, samples]
    return {
        "v1": augment_video_batch(clips1, [it.video[0] for it in items], video_settings),
        "v2": augment_video_batch(clips2, [it.video[1] for it in items], video_settings),
        "a1": augment_audio_batch(waves[:, 0], [it.audio[0] for it in items], audio_settings),
        "a2": augment_audio_batch(waves[:, 1], [it.audio[1] for it in items], audio_settings),
    }


@dataclass
class CollateRaw:
    """Collate for the main-process / DALI paths: just the list of prepared clips (bytes move)."""

    def __call__(self, items: Sequence[Prepared]) -> dict[str, Any]:
        return {"items": list(items), "keys": [it.raw.key for it in items]}


@dataclass
class CollateAugment:
    """Collate that decodes and augments in the worker (CPU backend)."""

    video_settings: VideoAugSettings = paper.VIDEO_AUG
    audio_settings: AudioAugSettings = paper.AUDIO_AUG

    def __call__(self, items: Sequence[Prepared]) -> dict[str, Any]:
        out = augment_prepared(items, "cpu", self.video_settings, self.audio_settings)
        return out | {"keys": [it.raw.key for it in items]}


class TrainLoader:
    """Iterable of training batches ``{v1, v2, a1, a2, keys}`` on ``device``, with exact resume.

    Wraps :class:`avshards.stream.StreamLoader` (equal batches on every rank, exact position).
    ``len()`` is batches per epoch on this rank; :meth:`set_epoch` selects an epoch (a full pass
    also advances it); :meth:`state_dict` / :meth:`load_state_dict` save and restore the
    mid-epoch position; :attr:`stats` counts clips and clips skipped without audio.
    """

    def __init__(self, stream: ShardStream, prepare: PrepareClip, batch_size: int, num_workers: int,
                 device: str | torch.device, decode_in_workers: bool, backend: str = "torch"):
        self.prepare, self.device = prepare, torch.device(device)
        self.decode_in_workers, self.backend = decode_in_workers, backend
        collate = (CollateAugment(prepare.video_settings, prepare.audio_settings)
                   if decode_in_workers else CollateRaw())
        extra = {"prefetch_factor": 4, "pin_memory": self.device.type == "cuda"} if num_workers else {}
        self.batches = StreamLoader(stream, batch_size, num_workers, collate, **extra)
        self._stats = self.batches.stats
        self._dali = _dali_augmenter(batch_size, self.device, prepare) if backend == "dali" else None

    @property
    def epoch(self) -> int:
        return self.batches.epoch

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` (no-op when already in it, so a resumed position is kept)."""
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def stats(self) -> dict[str, int]:
        """Counts of the current epoch on this rank: clips delivered, skipped without audio, and
        the stream's own (lost to read errors, dropped / padded to split evenly)."""
        s = self._stats
        return {"clips": s.get("yielded", 0), "skipped_no_audio": s.get("skipped", 0),
                **{k: v for k, v in s.items() if k not in ("yielded", "skipped")}}

    def state_dict(self) -> dict[str, Any]:
        """The position to checkpoint (the stream's, plus the view mode for a sanity check)."""
        return {"stream": self.batches.state_dict(), "mode": self.prepare.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue right after the last batch delivered when ``state`` was taken."""
        self.batches.load_state_dict(state["stream"])
        self._stats = self.batches.stats

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Decode/augment in this process when the workers did not; move to the device."""
        if self._dali is not None:
            return self._dali([dali_selection(it) for it in batch["items"]]) | {"keys": batch["keys"]}
        if not self.decode_in_workers:
            out = augment_prepared(batch["items"], self.device, self.prepare.video_settings,
                                   self.prepare.audio_settings)
            return out | {"keys": batch["keys"]}
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # the map function travels to the workers when the DataLoader starts: set its epoch first
        self.prepare.epoch = self.batches.epoch
        for batch in self.batches:
            self._stats = self.batches.stats      # kept past the epoch's end, where the stream resets
            yield self._finish(batch)


def dali_selection(item: Prepared) -> dict[str, Any]:
    """One clip in the form :class:`crisscross.data.dali_backend.DaliAugmenter` takes, with this
    backend's drawn parameters injected (so DALI and torch see the same views and resume alike)."""
    raw = item.raw
    video = {}
    for name, p in zip(("v1", "v2"), item.video):
        video[name] = {"crop": list(p.crop), "flip": int(p.flip), "jitter": list(p.jitter),
                       "order": list(p.jitter_order), "gray": int(p.grayscale), "sigma": p.blur_sigma or 0.0,
                       "cutout": list(p.cutout or (0, 0, 0))}
    audio = {}
    for name, p in zip(("a1", "a2"), item.audio):
        audio[name] = {"volume": p.volume, "masks": [v for m in p.freq_masks + p.time_masks for v in m],
                       "crop": list(p.crop or (0, 0, 0, 0))}
    return {"jpeg": [raw.jpegs[j] for j in raw.v1 + raw.v2],
            "a1": np.asarray(raw.a1, np.float32) / 32768.0, "a2": np.asarray(raw.a2, np.float32) / 32768.0,
            "params": video | audio}


def _dali_augmenter(batch_size: int, device: torch.device, prepare: PrepareClip):
    backend = _import_dali_backend()
    return backend.DaliAugmenter(batch_size, device="gpu" if device.type == "cuda" else "cpu", params="inject",
                                 video_frames=prepare.video_frames,
                                 audio_seconds=prepare.audio_samples / paper.SAMPLE_RATE,
                                 seed=prepare.seed, device_id=device.index or 0,
                                 video=prepare.video_settings, audio=prepare.audio_settings)


def _import_dali_backend():
    try:
        from crisscross.data import dali_backend
    except ImportError as err:
        raise ImportError(f"--backend dali needs NVIDIA DALI ({err}); install it with "
                          "`pip install 'crisscross-av[dali]'`, or use --backend torch.") from err
    return dali_backend


def make_train_loader(url: str, batch_size: int, num_workers: int = 2, mode: str = "mild",
                      backend: str = "torch", device: str = "cpu", seed: int = 0,
                      epoch_size: int | None = None, video_frames: int = paper.VIDEO_FRAMES,
                      audio_seconds: float = paper.AUDIO_SECONDS, rank: int | None = None,
                      world_size: int | None = None, decode_in_workers: bool | None = None,
                      video_settings: VideoAugSettings = paper.VIDEO_AUG,
                      audio_settings: AudioAugSettings = paper.AUDIO_AUG,
                      shuffle_buffer: int = 256) -> TrainLoader:
    """The training loader over the shards at ``url`` (folder, brace pattern, http(s)://, s3://).

    ``decode_in_workers`` defaults to True on CPU and False on CUDA (workers move bytes, the GPU
    decodes and augments); ``backend="dali"`` always decodes in the main process via DALI.
    ``shuffle_buffer``: samples shuffled together inside each worker's part (avshards.stream);
    ``rank`` / ``world_size`` default to torch.distributed, else RANK / WORLD_SIZE, else 0 / 1.
    """
    if mode not in MODES:
        raise ValueError(f"unknown view mode {mode!r}; choose one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} must be at least 1")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu.")
    if decode_in_workers is None:
        decode_in_workers = torch.device(device).type == "cpu"
    if backend == "dali":
        decode_in_workers = False
    prepare = PrepareClip(mode, seed, 0, video_frames, int(round(audio_seconds * paper.SAMPLE_RATE)),
                          video_settings, audio_settings)
    stream = ShardStream(url, seed=seed, shuffle_buffer=shuffle_buffer, epoch_size=epoch_size,
                         map_fn=prepare, rank=rank, world_size=world_size, skip=Lacks("mjpeg", "wav"))
    return TrainLoader(stream, prepare, batch_size, num_workers, device, decode_in_workers, backend)
