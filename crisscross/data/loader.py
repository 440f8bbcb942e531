"""The training loader: avshards stream -> two-view selection -> augmentation backend -> batches.

Stages (each a small function, composed by :func:`make_train_loader`)::

    DataLoader worker                                      | where the backend says
    clip --PrepareClip--> RawTwoViews (16 JPEG bytes,      | decode 16 JPEGs (torchvision.io.decode_jpeg,
          two int16 audio slices) + drawn parameters       | nvJPEG on "cuda"), augment_video_batch,
          (crisscross.data.selection: seed, epoch, key)    | augment_audio_batch -> {v1, v2, a1, a2}

``device="cpu"`` (default): the second half runs in the workers (inside the collate function), so
the main process receives finished tensors. ``device="cuda"``: workers only move bytes and draw
parameters; the main process decodes a whole batch with nvJPEG and augments on the GPU.
``decode_in_workers=False`` runs that split on the CPU too, which is how CI exercises it.
``backend="dali"`` hands the same worker-side selection to :mod:`crisscross.data.dali.feeder`.

Clips without audio are skipped in the worker and counted (``stats["skipped_no_audio"]``); the
stream (:class:`avshards.stream.ShardStream`) then reads on, wrapping around the worker's part, so
every rank still gets the same number of full batches, and the skips are a pure function of the
data, so a resumed epoch skips the same clips.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from avshards.stream import DEFAULT_MAX_LOST, Lacks, ShardStream, StreamLoader
from crisscross import paper
from crisscross.data.augment import augment_audio_batch, augment_video_batch
from crisscross.data.choices import check_backend, check_mode
from crisscross.data.dali import inputs as dali_inputs
from crisscross.data.selection import Prepared, PrepareClip
from crisscross.paper import AudioAugSettings, VideoAugSettings


def decode_jpegs(jpegs: Sequence[bytes], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Decode JPEG bytes to uint8 [3, H, W] tensors on ``device`` (one nvJPEG batch on CUDA)."""
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
        self._dali = _dali_feeder(batch_size, self.device, prepare) if backend == "dali" else None

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
            return self._dali([dali_inputs.from_prepared(it) for it in batch["items"]]) | {"keys": batch["keys"]}
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


def _dali_feeder(batch_size: int, device: torch.device, prepare: PrepareClip):
    """The DALI external-source augmenter for ``--backend dali``."""
    try:        # here, not at the top: DALI is optional, and only this backend needs it
        from crisscross.data.dali import feeder
    except ImportError as err:
        raise ImportError(f"--backend dali needs NVIDIA DALI ({err}); install it with "
                          "`pip install 'crisscross-av[dali]'`, or use --backend torch.") from err
    return feeder.DaliAugmenter(batch_size, device="gpu" if device.type == "cuda" else "cpu",
                                video_frames=prepare.video_frames,
                                audio_seconds=prepare.audio_samples / paper.SAMPLE_RATE,
                                device_id=device.index or 0, video=prepare.video_settings,
                                audio=prepare.audio_settings)


def make_train_loader(url: str, batch_size: int, num_workers: int = 2, mode: str = "mild",
                      backend: str = "torch", device: str = "cpu", seed: int = 0,
                      epoch_size: int | None = None, video_frames: int = paper.VIDEO_FRAMES,
                      audio_seconds: float = paper.AUDIO_SECONDS, rank: int | None = None,
                      world_size: int | None = None, decode_in_workers: bool | None = None,
                      video_settings: VideoAugSettings = paper.VIDEO_AUG,
                      audio_settings: AudioAugSettings = paper.AUDIO_AUG,
                      shuffle_buffer: int = 256,
                      max_lost: float | int | None = DEFAULT_MAX_LOST) -> TrainLoader:
    """The training loader over the shards at ``url`` (folder, brace pattern, http(s)://, s3://).

    ``decode_in_workers`` defaults to True on CPU and False on CUDA (workers move bytes, the GPU
    decodes and augments); ``backend="dali"`` always decodes in the main process via DALI.
    ``shuffle_buffer``: samples shuffled together inside each worker's part (avshards.stream);
    ``rank`` / ``world_size`` default to torch.distributed, else RANK / WORLD_SIZE, else 0 / 1.
    ``max_lost``: clips of an epoch this rank may lose to unreadable shards (a fraction or a count;
    None: no limit) before :class:`avshards.stream.LostClipsError` (see ``ShardStream``).
    """
    check_mode(mode)
    check_backend(backend)
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
                         map_fn=prepare, rank=rank, world_size=world_size, skip=Lacks("mjpeg", "wav"),
                         max_lost=max_lost)
    return TrainLoader(stream, prepare, batch_size, num_workers, device, decode_in_workers, backend)
