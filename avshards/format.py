"""The avshards shard format: one tar sample = one clip of a source video.

Members of a sample (the key has no dots; see docs/format.md for the reasons):

- ``KEY.json``  metadata (schema version, source, segment, label, fps, frame count and size,
  byte offsets of every frame in the JPEG stream, sample rate, sample count, audio level, notes).
- ``KEY.mjpeg`` the frames at 16 fps as one concatenated JPEG stream (ffmpeg can play it);
  frame ``i`` is ``mjpeg[frame_offsets[i]:frame_offsets[i + 1]]``.
- ``KEY.wav``   16 kHz mono 16-bit PCM with a canonical 44-byte header; absent when the clip has
  no audio (``has_audio`` false, the reason in ``notes``).

This module is the single definition of that layout: the writer encodes with :func:`encode_sample`
and every reader decodes with :class:`AVClip`.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SCHEMA = "avshards.clip"
SCHEMA_VERSION = 1
FPS = 16
SAMPLE_RATE = 16000
WAV_HEADER_BYTES = 44
MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.jsonl"


class SchemaError(ValueError):
    """A sample whose metadata this version of avshards does not understand."""


def check_schema(meta: Mapping[str, Any], where: str = "sample") -> None:
    """Raise :class:`SchemaError` with a clear sentence if ``meta`` is not a clip we can read."""
    if meta.get("schema") != SCHEMA:
        raise SchemaError(f"{where} is not an avshards clip (no '{SCHEMA}' schema in its json); "
                          "build the shards with `avshards build`.")
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaError(f"{where} has shard schema version {version}, but this avshards reads up "
                          f"to version {SCHEMA_VERSION}; upgrade avshards (pip install -U crisscross-av).")


def wav_bytes(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode int16 mono samples as a canonical 44-byte-header PCM wav."""
    pcm = np.ascontiguousarray(pcm, dtype="<i2")
    data = pcm.tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, 1,
                         sample_rate, sample_rate * 2, 2, 16, b"data", len(data))
    return header + data


def split_jpeg_stream(stream: bytes) -> list[int]:
    """Byte offsets (n + 1 of them) of the n JPEG images concatenated in ``stream``.

    Each image runs from an SOI marker (FFD8) to its EOI marker (FFD9). Baseline JPEGs from
    ffmpeg's mjpeg encoder carry no embedded thumbnails, so the first EOI after an SOI ends it.
    """
    offsets, pos, n = [], 0, len(stream)
    while pos < n:
        if stream[pos:pos + 2] != b"\xff\xd8":
            raise ValueError(f"JPEG stream is corrupt at byte {pos} (no start-of-image marker)")
        end = stream.find(b"\xff\xd9", pos + 2)
        if end < 0:
            raise ValueError(f"JPEG stream is truncated after byte {pos} (no end-of-image marker)")
        offsets.append(pos)
        pos = end + 2
    offsets.append(n)
    return offsets


def encode_sample(key: str, meta: dict[str, Any], jpeg_stream: bytes, frame_offsets: Sequence[int],
                  pcm: np.ndarray | None) -> dict[str, Any]:
    """The webdataset sample dict (``__key__`` + members) for one clip.

    ``meta`` holds the descriptive fields; the fields derived from the content (schema, frame
    offsets, counts, has_audio) are filled in here so they can never disagree with it.
    """
    if "." in key:
        raise ValueError(f"sample key {key!r} contains a dot; webdataset would split it")
    meta = dict(meta)
    meta.update(schema=SCHEMA, schema_version=SCHEMA_VERSION, key=key,
                fps=meta.get("fps", FPS), num_frames=len(frame_offsets) - 1,
                frame_offsets=[int(o) for o in frame_offsets],
                sample_rate=meta.get("sample_rate", SAMPLE_RATE),
                num_samples=0 if pcm is None else int(len(pcm)), has_audio=pcm is not None)
    sample: dict[str, Any] = {"__key__": key, "json": json.dumps(meta, sort_keys=True).encode(),
                              "mjpeg": jpeg_stream}
    if pcm is not None:
        sample["wav"] = wav_bytes(pcm, meta["sample_rate"])
    return sample


class AVClip:
    """One clip read from a shard: metadata plus lazy access to frames and audio.

    Nothing is decoded until asked: ``frames([0, 4, 8])`` decodes three JPEGs, ``audio(s, n)``
    converts only ``n`` samples.

    Besides the shard's content a clip carries where a stream read it (both are functions of
    the position, so a resumed run sees the same values):

    - ``epoch``: the epoch of :class:`avshards.stream.ShardStream` it was read in (None when read
      outside a stream, e.g. by :func:`avshards.reader.open_shards`);
    - ``visit``: which pass over the data that read belongs to (0, 1, ... when an epoch is larger
      than the data and reads every clip several times), so per-read randomness can differ.
    """

    def __init__(self, key: str, meta: dict[str, Any], mjpeg: bytes, wav: bytes | None,
                 url: str | None = None, epoch: int | None = None, visit: int = 0):
        self.key, self.meta, self.url = key, meta, url
        self.epoch, self.visit = epoch, visit
        self._mjpeg, self._wav = mjpeg, wav
        self._offsets = meta["frame_offsets"]

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any], epoch: int | None = None, visit: int = 0) -> "AVClip":
        """Build from a raw webdataset sample dict (``__key__``, ``json``, ``mjpeg``, ``wav``);
        ``epoch`` and ``visit`` say where a stream read it (see the class docstring)."""
        key = sample["__key__"]
        where = f"sample {key!r} of {sample.get('__url__', 'a shard')}"
        if "json" not in sample or "mjpeg" not in sample:
            raise SchemaError(f"{where} has no json/mjpeg member; is this an avshards shard?")
        raw = sample["json"]
        meta = json.loads(raw) if isinstance(raw, (bytes, str)) else dict(raw)
        check_schema(meta, where)
        return cls(key, meta, sample["mjpeg"], sample.get("wav"), sample.get("__url__"), epoch, visit)

    # metadata -------------------------------------------------------------------------------
    @property
    def label(self) -> str | None:
        return self.meta.get("label")

    @property
    def split(self) -> str | None:
        return self.meta.get("split")

    @property
    def fps(self) -> float:
        return self.meta["fps"]

    @property
    def num_frames(self) -> int:
        return self.meta["num_frames"]

    @property
    def sample_rate(self) -> int:
        return self.meta["sample_rate"]

    @property
    def num_samples(self) -> int:
        return self.meta["num_samples"]

    @property
    def has_audio(self) -> bool:
        return bool(self.meta["has_audio"])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def __repr__(self) -> str:
        return (f"AVClip({self.key!r}, label={self.label!r}, frames={self.num_frames}, "
                f"samples={self.num_samples}, has_audio={self.has_audio})")

    # content ----------------------------------------------------------------------------------
    def jpeg(self, indices: Sequence[int]) -> list[bytes]:
        """The encoded JPEG bytes of the given frames (no decoding)."""
        o, n = self._offsets, self.num_frames
        out = []
        for i in indices:
            if not -n <= i < n:
                raise IndexError(f"frame {i} out of range for clip {self.key!r} with {n} frames")
            i %= n
            out.append(self._mjpeg[o[i]:o[i + 1]])
        return out

    def frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Decode the given frames (all when ``None``) to a uint8 array (T, H, W, 3)."""
        from PIL import Image

        if indices is None:
            indices = range(self.num_frames)
        images = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in self.jpeg(indices)]
        if not images:
            return np.zeros((0, self.meta["height"], self.meta["width"], 3), np.uint8)
        return np.stack(images)

    def pcm(self, start: int = 0, length: int | None = None) -> np.ndarray:
        """int16 samples ``[start, start + length)``, clipped to the clip; empty without audio."""
        if self._wav is None:
            return np.zeros(0, np.int16)
        start = max(0, min(int(start), self.num_samples))
        stop = self.num_samples if length is None else min(self.num_samples, start + int(length))
        a, b = WAV_HEADER_BYTES + 2 * start, WAV_HEADER_BYTES + 2 * max(stop, start)
        return np.frombuffer(self._wav[a:b], dtype="<i2")

    def audio(self, start: int = 0, length: int | None = None) -> np.ndarray:
        """float32 samples in [-1, 1] for ``[start, start + length)`` (only that range is read)."""
        return self.pcm(start, length).astype(np.float32) / 32768.0
