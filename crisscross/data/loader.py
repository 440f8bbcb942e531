"""The training loader: avshards stream -> two-view selection -> augmentation backend -> batches.

Stages (each a small function, composed by :func:`make_train_loader`)::

    DataLoader worker                                      | where the backend says
    clip --PrepareClip--> RawTwoViews (the views' distinct | decode the distinct JPEGs (torchvision
          JPEGs, two int16 audio slices) + drawn           | decode_jpeg, nvJPEG on "cuda"),
          parameters (crisscross.data.selection)           | augment_video_batch, augment_audio_batch
          --collate_raw--> one batch of tensors             | -> {v1, v2, a1, a2}

``device="cpu"`` (default): the second half runs in the workers (inside the collate function), so
the main process receives finished tensors (written in shared memory). ``device="cuda"``: workers
only move bytes and draw parameters, in tensors (pinned on their way); the main process decodes a
whole batch with nvJPEG and augments it on the GPU in a fixed number of ops, one batch ahead on a
side stream. ``decode_in_workers=False`` runs that split on the CPU too, which is how CI exercises
it. ``backend="dali"`` hands the same worker-side selection to :mod:`crisscross.data.dali.feeder`.

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
from torch.utils.data import get_worker_info
from torchvision.io import ImageReadMode, decode_jpeg

from avshards.stream import Lacks, ShardStream, StreamLoader
from crisscross import paper
from crisscross.data.augment import augment_audio_batch, augment_video_batch
from crisscross.data.choices import (TEMPORAL_CONSISTENCY, check_audio_augs, check_backend, check_choice,
                                     check_mode, check_video_augs)
from crisscross.data.dali import inputs as dali_inputs
from crisscross.data.selection import Prepared, PrepareClip
from crisscross.paper import AudioAugSettings, VideoAugSettings


def decode_jpegs(jpegs: Sequence[bytes | torch.Tensor], device: str | torch.device = "cpu") -> list[torch.Tensor]:
    """Decode JPEGs (bytes or 1-D uint8 tensors) to uint8 [3, H, W] tensors on ``device`` (one
    nvJPEG batch on CUDA)."""
    data = [j if torch.is_tensor(j) else torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    if not data:
        return []
    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def collate_raw(items: Sequence[Prepared]) -> dict[str, Any]:
    """A batch of prepared clips as tensors, so that ``pin_memory`` pins them and the copies to a
    device can be non-blocking: every distinct JPEG of the batch in one uint8 tensor (``jpeg``,
    clip ``i``'s frames from ``jpeg_offsets[first[i]]``), the views' frame indices into each clip's
    frames (``v1``, ``v2`` [B, T]), the int16 PCM of both views (``pcm`` [B, 2, samples]); plus the
    drawn parameters (``video``, ``audio``) and ``keys``."""
    jpegs = [j for it in items for j in it.raw.jpegs]
    counts = [len(it.raw.jpegs) for it in items]
    # np.asarray: a DataLoader may have turned the slices into tensors on the way
    pcm = np.stack([np.stack([np.asarray(it.raw.a1), np.asarray(it.raw.a2)]) for it in items])
    return {"jpeg": torch.from_numpy(np.concatenate([np.frombuffer(j, np.uint8) for j in jpegs])),
            "jpeg_offsets": torch.from_numpy(np.cumsum([0] + [len(j) for j in jpegs])),
            "first": torch.from_numpy(np.cumsum([0] + counts[:-1])),
            "v1": torch.tensor([it.raw.v1 for it in items]), "v2": torch.tensor([it.raw.v2 for it in items]),
            "pcm": torch.from_numpy(pcm), "video": [it.video for it in items], "audio": [it.audio for it in items],
            "keys": [it.raw.key for it in items]}


def batch_jpegs(batch: dict[str, Any]) -> list[torch.Tensor]:
    """The JPEGs of a :func:`collate_raw` batch, as views of its one tensor."""
    offsets = batch["jpeg_offsets"].tolist()
    return [batch["jpeg"][a:b] for a, b in zip(offsets, offsets[1:])]


def _views(frames: list[torch.Tensor], first: list[int], index: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Each clip's view as [T, H, W, 3] from the decoded frames ([H, W, 3] each, clip i's from
    ``first[i]``) and the view's indices ``index`` [B, T]. On the CPU one stack per clip; elsewhere
    one stack and one gather per frame size (a fixed number of ops whatever the batch size)."""
    rows = [[first[i] + j for j in row] for i, row in enumerate(index.tolist())]
    if device.type == "cpu":
        return [torch.stack([frames[k] for k in row]) for row in rows]
    by_size: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        by_size.setdefault(tuple(frames[row[0]].shape), []).append(i)
    out: list[torch.Tensor] = [None] * len(rows)    # type: ignore[list-item]
    for members in by_size.values():
        used = sorted({k for i in members for k in rows[i]})
        where = {k: n for n, k in enumerate(used)}
        pool = torch.stack([frames[k] for k in used])
        picked = pool[torch.tensor([[where[k] for k in rows[i]] for i in members]).to(device, non_blocking=True)]
        for i, view in zip(members, picked.unbind(0)):
            out[i] = view
    return out


def augment_raw(batch: dict[str, Any], device: str | torch.device = "cpu",
                video_settings: VideoAugSettings = paper.VIDEO_AUG,
                audio_settings: AudioAugSettings = paper.AUDIO_AUG,
                out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Decode and augment a :func:`collate_raw` batch on ``device`` -> {v1, v2 [B,3,T,S,S], a1, a2
    [B,1,F,T]}; ``out`` may hold the tensors to write v1 / v2 into."""
    device = torch.device(device)
    # decoded frames are [3, H, W] views of H x W x 3 pixels: kept so, a view's crop + resize reads
    # channels-last uint8, the layout torch's antialiased resize is fastest on
    frames = [f.permute(1, 2, 0) for f in decode_jpegs(batch_jpegs(batch), device)]
    first = batch["first"].tolist()
    waves = batch["pcm"].to(device, non_blocking=True).float().div_(32768.0)        # [B, 2, samples]
    out = out or {}
    return {
        "v1": augment_video_batch(_views(frames, first, batch["v1"], device), [v[0] for v in batch["video"]],
                                  video_settings, out=out.get("v1")),
        "v2": augment_video_batch(_views(frames, first, batch["v2"], device), [v[1] for v in batch["video"]],
                                  video_settings, out=out.get("v2")),
        "a1": augment_audio_batch(waves[:, 0], [a[0] for a in batch["audio"]], audio_settings),
        "a2": augment_audio_batch(waves[:, 1], [a[1] for a in batch["audio"]], audio_settings),
    }


def augment_prepared(items: Sequence[Prepared], device: str | torch.device = "cpu",
                     video_settings: VideoAugSettings = paper.VIDEO_AUG,
                     audio_settings: AudioAugSettings = paper.AUDIO_AUG) -> dict[str, torch.Tensor]:
    """Decode and augment prepared clips on ``device`` -> {v1, v2 [B,3,T,S,S], a1, a2 [B,1,F,T]}."""
    return augment_raw(collate_raw(items), device, video_settings, audio_settings)


def shared_empty(*shape: int) -> torch.Tensor:
    """An empty float32 tensor, in shared memory inside a DataLoader worker: handing it to the main
    process then needs no copy (what torch's ``default_collate`` does for the same reason)."""
    if get_worker_info() is None:
        return torch.empty(shape)
    numel = int(np.prod(shape))
    return torch.empty(0).new(torch.empty(0)._typed_storage()._new_shared(numel)).view(shape)


@dataclass
class CollateRaw:
    """Collate for the main-process / DALI paths: the batch as tensors (:func:`collate_raw`)."""

    def __call__(self, items: Sequence[Prepared]) -> dict[str, Any]:
        return collate_raw(items)


@dataclass
class CollateAugment:
    """Collate that decodes and augments in the worker (CPU backend), the videos written straight
    into shared memory."""

    video_settings: VideoAugSettings = paper.VIDEO_AUG
    audio_settings: AudioAugSettings = paper.AUDIO_AUG
    video_frames: int = paper.VIDEO_FRAMES

    def __call__(self, items: Sequence[Prepared]) -> dict[str, Any]:
        size = self.video_settings.crop_size
        out = {v: shared_empty(len(items), 3, self.video_frames, size, size) for v in ("v1", "v2")}
        batch = collate_raw(items)
        return augment_raw(batch, "cpu", self.video_settings, self.audio_settings, out) | {"keys": batch["keys"]}


class TrainLoader:
    """Iterable of training batches ``{v1, v2, a1, a2, keys}`` on ``device``, with exact resume.

    Wraps :class:`avshards.stream.StreamLoader` (equal batches on every rank, exact position).
    ``len()`` is batches per epoch on this rank; :meth:`set_epoch` selects an epoch (a full pass
    also advances it); :meth:`state_dict` / :meth:`load_state_dict` save and restore the
    mid-epoch position; :attr:`stats` counts clips and clips skipped without audio.

    Where the main process augments (CUDA, DALI), the next batch is started before the current one
    is handed out: on CUDA its decode and augmentation are queued on a side stream, DALI runs it in
    its own threads, so the GPU never waits for the host between steps. The position, epoch and
    counts are those of the batches handed out, never of the one prepared ahead.
    """

    def __init__(self, stream: ShardStream, prepare: PrepareClip, batch_size: int, num_workers: int,
                 device: str | torch.device, decode_in_workers: bool, backend: str = "torch"):
        self.prepare, self.device = prepare, torch.device(device)
        self.decode_in_workers, self.backend = decode_in_workers, backend
        collate = (CollateAugment(prepare.video_settings, prepare.audio_settings, prepare.video_frames)
                   if decode_in_workers else CollateRaw())
        extra = {"prefetch_factor": 4, "pin_memory": self.device.type == "cuda"} if num_workers else {}
        self.batches = StreamLoader(stream, batch_size, num_workers, collate, **extra)
        self._stats = self.batches.stats
        self._handed: tuple[dict[str, Any], dict[str, int]] | None = None    # (position, stats) handed out
        self._dali = _dali_feeder(batch_size, self.device, prepare) if backend == "dali" else None
        self._side = torch.cuda.Stream(self.device) if self.device.type == "cuda" and self._dali is None else None

    @property
    def epoch(self) -> int:
        return self._handed[0]["epoch"] if self._handed else self.batches.epoch

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` (no-op when already in it, so a resumed position is kept)."""
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def stats(self) -> dict[str, int]:
        """Counts of the current epoch on this rank: clips delivered, skipped without audio, and
        the stream's own (lost to read errors, dropped / padded to split evenly)."""
        s = self._handed[1] if self._handed else self._stats
        return {"clips": s.get("yielded", 0), "skipped_no_audio": s.get("skipped", 0),
                **{k: v for k, v in s.items() if k not in ("yielded", "skipped")}}

    def state_dict(self) -> dict[str, Any]:
        """The position to checkpoint (the stream's, plus the view mode for a sanity check)."""
        return {"stream": self._handed[0] if self._handed else self.batches.state_dict(), "mode": self.prepare.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue right after the last batch delivered when ``state`` was taken."""
        self.batches.load_state_dict(state["stream"])
        self._stats = self.batches.stats

    # --- one batch: start (asynchronous where the device allows), then finish on the current stream
    def _start(self, batch: dict[str, Any]) -> Any:
        if self._dali is not None:
            self._dali.start(dali_inputs.from_batch(batch))
            return batch["keys"]
        if self.decode_in_workers:
            return batch
        if self._side is None:                      # CPU / another device: no stream to overlap on
            return self._augment(batch)
        self._side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side):
            return self._augment(batch)

    def _augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = augment_raw(batch, self.device, self.prepare.video_settings, self.prepare.audio_settings)
        return out | {"keys": batch["keys"]}

    def _finish(self, started: Any) -> dict[str, Any]:
        if self._dali is not None:
            return self._dali.finish() | {"keys": started}
        if self.decode_in_workers:
            return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in started.items()}
        if self._side is not None:                  # the training stream waits for the side stream
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._side)
            for v in started.values():
                if torch.is_tensor(v):
                    v.record_stream(current)
        return started

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # the map function travels to the workers when the DataLoader starts: set its epoch first
        self.prepare.epoch = self.batches.epoch
        ahead = self._dali is not None or self._side is not None
        pending = None                              # (started batch, position after it)
        try:
            for batch in self.batches:
                previous, pending = pending, (self._start(batch), (self.batches.state_dict(), self.batches.stats))
                if not ahead:
                    previous, pending = pending, None
                if previous is not None:
                    self._handed = previous[1]
                    yield self._finish(previous[0])
            if pending is not None:
                (started, self._handed), pending = pending, None
                yield self._finish(started)
            if self._handed:                        # kept past the epoch's end, where the stream resets
                self._stats = self._handed[1]
        finally:
            if pending is not None and self._dali is not None:
                self._dali.finish()                 # drain the run started ahead: the next pass starts clean
            self._handed = None


def _per_frame(temporal_consistency: str | None) -> bool | None:
    """``VideoAugSettings.per_frame`` for a --temporal-consistency value (None: keep the settings')."""
    if temporal_consistency is None:
        return None
    check_choice("temporal consistency", temporal_consistency, TEMPORAL_CONSISTENCY)
    return temporal_consistency == "frame"


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
                      shuffle_buffer: int = 256, video_augs: Sequence[str] | None = None,
                      audio_augs: Sequence[str] | None = None,
                      temporal_consistency: str | None = None) -> TrainLoader:
    """The training loader over the shards at ``url`` (folder, brace pattern, http(s)://, s3://).

    ``decode_in_workers`` defaults to True on CPU and False on CUDA (workers move bytes, the GPU
    decodes and augments); ``backend="dali"`` always decodes in the main process via DALI.
    ``shuffle_buffer``: samples shuffled together inside each worker's part (avshards.stream);
    ``rank`` / ``world_size`` default to torch.distributed, else RANK / WORLD_SIZE, else 0 / 1.
    ``video_augs`` / ``audio_augs``: the Table 5 codes of the augmentations to apply (None: all
    those of the settings, the paper's pretraining choice by default); ``temporal_consistency``
    "view" or "frame" (spatial augmentations drawn per frame; None: the settings').
    """
    check_mode(mode)
    check_backend(backend)
    if video_augs is not None:
        check_video_augs(video_augs)
    video_settings = video_settings.only(paper.VIDEO_AUG_CODES if video_augs is None else video_augs,
                                         per_frame=_per_frame(temporal_consistency))
    if audio_augs is not None:
        check_audio_augs(audio_augs)
        audio_settings = audio_settings.only(audio_augs)
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
