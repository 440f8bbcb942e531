"""Batches as mixed as an i.i.d. shuffle: a class-folder set of real sounds, built with `avshards build`
(shuffled by default, and with --no-shuffle), read through the training loader."""

from __future__ import annotations

import shutil
import subprocess
from math import comb
from pathlib import Path

import numpy as np
import pytest

import avshards
from crisscross.data.loader import make_train_loader

CLASSES = ("coin", "error", "gameover", "hit", "hurt", "jump")     # 5 recordings each in arcade_sfx
COPIES = 2              # each recording laid out twice, so a class spans two shards of 6 videos
BATCH = 16


@pytest.fixture(scope="module")
def class_folders(media, tmp_path_factory) -> Path:
    """6 class folders of 10 one-second videos: a real arcade sound each, over a second of a real video
    (one ffmpeg call makes the 30 recordings)."""
    root = tmp_path_factory.mktemp("classes")
    sounds = [(c, i) for c in CLASSES for i in range(1, 6)]
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(media / "video" / "arcade" / "earth.mp4")]
    for c, i in sounds:
        args += ["-i", str(media / "audio" / "arcade_sfx" / f"{c}{i}.wav")]
    for n, (c, i) in enumerate(sounds, 1):
        (root / c).mkdir(exist_ok=True)
        args += ["-map", "0:v", "-map", f"{n}:a", "-ss", str(n % 25), "-t", "1", "-af", "apad", "-vf", "scale=48:32",
                 "-c:v", "mjpeg", "-c:a", "pcm_s16le", str(root / c / f"{c}{i}_0.mkv")]
    subprocess.run(args, check=True)
    for c, i in sounds:
        for k in range(1, COPIES):
            shutil.copy(root / c / f"{c}{i}_0.mkv", root / c / f"{c}{i}_{k}.mkv")
    return root


def build(src: Path, out: Path, **kw) -> str:
    avshards.build(src, out, short_side=32, videos_per_shard=6, workers=2, progress=False, **kw)
    return str(out)


def iid_distinct(label_counts: dict[str, int], batch: int) -> float:
    """Expected distinct labels in a batch drawn without replacement from these clips."""
    n = sum(label_counts.values())
    return sum(1 - comb(n - k, batch) / comb(n, batch) for k in label_counts.values())


def mixing_ratio(url: str, epochs: int = 6, **kw) -> float:
    """Mean distinct labels per training batch over ``epochs``, relative to an i.i.d. shuffle's."""
    labels = {c.key: c.label for c in avshards.open_shards(url)}
    counts = {c: list(labels.values()).count(c) for c in CLASSES}
    loader = make_train_loader(url, batch_size=BATCH, num_workers=2, video_frames=2, audio_seconds=0.5, **kw)
    seen, expected = [], []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            seen.append(len({labels[k] for k in batch["keys"]}))
            expected.append(iid_distinct(counts, len(batch["keys"])))
    return float(np.mean(seen) / np.mean(expected))


@pytest.mark.slow
def test_class_folders_give_batches_as_mixed_as_iid(class_folders, tmp_path):
    shuffled = mixing_ratio(build(class_folders, tmp_path / "shuffled"))
    sorted_set = build(class_folders, tmp_path / "sorted", shuffle=False)
    stream_alone = mixing_ratio(sorted_set)
    in_order = mixing_ratio(sorted_set, epochs=1, shuffle_buffer=0)   # a sorted set read in order
    print(f"distinct labels per batch / i.i.d.: shuffled build {shuffled:.3f}, --no-shuffle {stream_alone:.3f}, "
          f"--no-shuffle read in order {in_order:.3f}")
    assert shuffled >= 0.95
    assert stream_alone >= 0.8          # the stream's chunk order + buffer alone (6 classes, 60 clips)
    assert in_order < 0.7               # the metric tells sorted from mixed
