"""One shard = one unit of work: transcode its videos, cut them into clips, write the tar + index.

:func:`build_shard` is a plain picklable function of a plain :class:`ShardSpec`, so the same code
runs in a local process pool and, later, as a Ray task. The shard is written under a temporary
name and renamed when complete, its index first and the tar last: a ``.tar`` in the output folder
always means a finished shard, which is what makes a killed build resumable.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from avshards.format import FPS, SAMPLE_RATE, encode_sample
from avshards.index import index_path, write_index
from avshards.sources import SourceItem
from avshards.transcode import (DEFAULT_QUALITY, DEFAULT_SHORT_SIDE, DEFAULT_TIMEOUT, MIN_VIDEO_SECONDS,
                                SILENCE_DB, Decoded, TranscodeError, audio_level, transcode)

TMP_SUFFIX = ".tmp"
DEFAULT_CLIP_SECONDS = 10.0


@dataclass(frozen=True)
class ClipOptions:
    """How every video is transcoded and cut (part of the manifest: it defines the output)."""

    short_side: int = DEFAULT_SHORT_SIDE
    quality: int = DEFAULT_QUALITY
    clip_seconds: float = DEFAULT_CLIP_SECONDS
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class ShardSpec:
    """Everything one shard needs: its file, its videos (global index, source) and the options."""

    path: str
    videos: tuple[tuple[int, SourceItem], ...]
    options: ClipOptions = ClipOptions()


@dataclass
class ShardResult:
    """What a finished shard holds; the manifest is assembled from these."""

    name: str
    num_samples: int = 0
    num_bytes: int = 0
    num_videos: int = 0
    seconds: float = 0.0
    num_with_audio: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    video_indices: list[int] = field(default_factory=list)   # videos with clips in the shard

    def entry(self) -> dict[str, Any]:
        """The manifest entry (``name`` and ``num_samples`` are what readers rely on)."""
        return {"name": self.name, "num_samples": self.num_samples, "num_bytes": self.num_bytes,
                "num_videos": self.num_videos, "num_with_audio": self.num_with_audio,
                "seconds": round(self.seconds, 3)}

    def add_clip(self, meta: dict[str, Any]) -> None:
        """Count one clip (from its json)."""
        self.num_samples += 1
        self.seconds += clip_duration(meta)
        self.num_with_audio += bool(meta["has_audio"])
        label = meta.get("label") or ""
        self.label_counts[label] = self.label_counts.get(label, 0) + 1


class Progress(Protocol):
    """Where a worker reports finished videos: a manager queue, or anything with ``put``."""

    def put(self, item: Any) -> None: ...


def clip_key(video_index: int, clip_index: int) -> str:
    """Unique, deterministic, dot-free: the video's place in the source list and the clip's in the video."""
    return f"{video_index:08d}_{clip_index:03d}"


def clip_bounds(total: float, clip_seconds: float) -> list[tuple[float, float]]:
    """Consecutive [start, end) pieces of at most ``clip_seconds``; a tail under 0.5 s is dropped."""
    bounds, t = [], 0.0
    while total - t > 1e-9:
        end = min(t + clip_seconds, total)
        if end - t >= MIN_VIDEO_SECONDS or not bounds:
            bounds.append((t, end))
        t = end
    return bounds


def cut_clips(dec: Decoded, item: SourceItem, video_index: int, options: ClipOptions) -> Iterator[dict]:
    """The webdataset samples of one decoded source: one per clip of at most ``clip_seconds``."""
    has_video = dec.num_frames > 0
    total = dec.num_frames / FPS if has_video else len(dec.pcm) / SAMPLE_RATE
    offset = item.start or 0.0
    for c, (t0, t1) in enumerate(clip_bounds(total, options.clip_seconds)):
        f0, f1 = round(t0 * FPS), round(t1 * FPS)
        o = dec.offsets
        jpeg = dec.jpeg[o[f0]:o[f1]] if has_video else b""
        offsets = [x - o[f0] for x in o[f0:f1 + 1]] if has_video else [0]
        pcm = None if dec.pcm is None else dec.pcm[round(t0 * SAMPLE_RATE):round(t1 * SAMPLE_RATE)]
        notes = list(dec.notes)
        if pcm is not None and len(pcm) == 0:   # the audio track ended before this clip
            pcm = None
            notes.append("audio track ends before this clip")
        meta: dict[str, Any] = {
            "source": item.path, "source_id": item.id, "video_index": video_index, "clip_index": c,
            "segment": [round(offset + t0, 4), round(offset + t1, 4)], "label": item.label,
            "split": item.split, "width": dec.width, "height": dec.height,
            "jpeg_quality": options.quality, "short_side": options.short_side}
        if pcm is not None:
            rms_db, peak = audio_level(pcm)
            meta.update(audio_rms_db=rms_db, audio_peak=peak)
            if rms_db < SILENCE_DB:
                notes.append(f"silent audio track (rms {rms_db} dBFS, peak {peak})")
        meta["notes"] = notes
        yield encode_sample(clip_key(video_index, c), meta, jpeg, offsets, pcm)


def clip_duration(meta: dict[str, Any]) -> float:
    """Seconds of a clip: its frames, or its audio for an audio-only clip."""
    if meta["num_frames"]:
        return meta["num_frames"] / meta["fps"]
    return meta["num_samples"] / meta["sample_rate"]


def scan_shard(path: str) -> ShardResult:
    """The result of a shard finished earlier (a resumed build skips it but lists it).

    Reads only the json members, so it costs a few milliseconds per shard.
    """
    result = ShardResult(os.path.basename(path), num_bytes=os.path.getsize(path))
    videos = set()
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isreg() and member.name.endswith(".json"):
                meta = json.load(tar.extractfile(member))
                result.add_clip(meta)
                videos.add(meta.get("video_index"))
    result.num_videos = len(videos)
    result.video_indices = sorted(videos)
    return result


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def build_shard(spec: ShardSpec, progress: Progress | None = None) -> ShardResult:
    """Transcode the shard's videos and write ``spec.path`` (+ its ``.idx``) atomically.

    A video that fails becomes a ``{source, reason}`` failure and the shard goes on. ``progress``
    (e.g. a manager queue) receives 1 per finished video. Temporary files are removed on any error.
    """
    import webdataset as wds   # here, not at the top: it imports torch, which `avshards --help` must not wait for

    name = os.path.basename(spec.path)
    result = ShardResult(name)
    tmp_tar, tmp_idx = spec.path + TMP_SUFFIX, index_path(spec.path) + TMP_SUFFIX
    try:
        with open(tmp_tar, "wb") as f, wds.TarWriter(f, mtime=0, user="avshards", group="avshards") as sink:
            for video_index, item in spec.videos:
                try:
                    o = spec.options
                    dec = transcode(item.path, start=item.start, end=item.end, short_side=o.short_side,
                                    quality=o.quality, timeout=o.timeout)
                    for sample in cut_clips(dec, item, video_index, o):
                        sink.write(sample)
                        result.add_clip(json.loads(sample["json"]))
                    result.num_videos += 1
                    result.video_indices.append(video_index)
                except TranscodeError as err:
                    result.failures.append({"source": item.path, "reason": str(err), "shard": name})
                if progress is not None:
                    progress.put(1)
        write_index(tmp_tar, tmp_idx)
        os.replace(tmp_idx, index_path(spec.path))
        os.replace(tmp_tar, spec.path)   # last: a .tar present means the shard is complete
    except BaseException:
        _remove(tmp_tar)
        _remove(tmp_idx)
        raise
    result.num_bytes = os.path.getsize(spec.path)
    return result
