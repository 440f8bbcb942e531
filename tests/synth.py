"""Tiny shards made in-process (no ffmpeg): known frame and sample counts, for reader/loader tests.

Real media go through `avshards build` in the build tests; these are for tests that need many
shards of exact sizes quickly.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import webdataset as wds
from PIL import Image

from avshards.format import FPS, MANIFEST_NAME, SAMPLE_RATE, encode_sample


def jpeg_stream(num_frames: int, size: tuple[int, int] = (32, 24), seed: int = 0) -> tuple[bytes, list[int]]:
    """A concatenated JPEG stream whose frame i is a flat colour encoding i (readable back)."""
    rng = np.random.default_rng(seed)
    parts, offsets, pos = [], [], 0
    w, h = size
    for i in range(num_frames):
        img = np.full((h, w, 3), (i * 7) % 256, np.uint8)
        img[: h // 2, : w // 2] = rng.integers(0, 256, 3, dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        parts.append(buf.getvalue())
        offsets.append(pos)
        pos += len(parts[-1])
    offsets.append(pos)
    return b"".join(parts), offsets


def synthetic_clip(key: str, seconds: float = 2.0, has_audio: bool = True, label: str | None = "a",
                   seed: int = 0) -> dict:
    """One webdataset sample dict in the avshards format."""
    n = int(round(seconds * FPS))
    stream, offsets = jpeg_stream(n, seed=seed)
    pcm = None
    if has_audio:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        pcm = (0.3 * np.sin(2 * np.pi * (220 + 10 * seed) * t) * 32767).astype(np.int16)
    meta = {"source": f"synthetic/{key}.mp4", "segment": [0.0, seconds], "label": label,
            "split": "train", "width": 32, "height": 24}
    return encode_sample(key, meta, stream, offsets, pcm)


def write_synthetic_shards(out: str | os.PathLike, counts: list[int], seconds: float = 2.0,
                           labels: tuple[str, ...] = ("a", "b")) -> list[str]:
    """Write one shard per entry of ``counts`` (clips in it) plus a manifest; return the paths."""
    os.makedirs(out, exist_ok=True)
    paths, shards, k = [], [], 0
    for s, count in enumerate(counts):
        path = os.path.join(out, f"shards-{s:06d}.tar")
        with wds.TarWriter(path, mtime=0) as sink:
            for _ in range(count):
                sink.write(synthetic_clip(f"clip{k:06d}", seconds, label=labels[k % len(labels)], seed=k))
                k += 1
        paths.append(path)
        shards.append({"name": os.path.basename(path), "num_samples": count,
                       "num_bytes": os.path.getsize(path)})
    with open(os.path.join(out, MANIFEST_NAME), "w") as f:
        json.dump({"shards": shards, "num_samples": k, "labels": list(labels)}, f)
    return paths
