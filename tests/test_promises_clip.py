"""README and docs/building.md: ``clip.frames([0, 8])`` "decodes only these two JPEGs",
``clip.audio(start, length)`` "reads only this range".

An :class:`~avshards.format.AVClip` holds its sample's bytes: the reader fetches each sample whole
(one ranged request per run of consecutive samples, docs/streaming.md). So the promise is about
decoding and converting, and it is tested as such, on a shard built by real ffmpeg; plus what the
network side does promise: fetching one clip asks for that clip's bytes and nothing else of the shard.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import avshards
import media_gen as gen
from avshards.reader import load_index, read_samples
from avshards.format import AVClip
from servers import ScriptedHttpServer


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """One shard of three 2 s clips (32 frames, 32000 samples each), built with ffmpeg."""
    root = tmp_path_factory.mktemp("clips")
    (root / "src" / "a").mkdir(parents=True)
    for i in range(3):
        gen.video(root / "src" / "a" / f"v{i}.mp4", 2.0, size="96x72")
    avshards.build(str(root / "src"), str(root / "out"), short_side=64, clip_seconds=4.0, videos_per_shard=3,
                   workers=1, progress=False)
    return root / "out"


def raw_sample(shard, k: int = 1) -> dict:
    url = str(shard / "shards-000000.tar")
    return next(read_samples(url, k, k + 1, load_index(url)))


def test_fetching_one_clip_over_http_asks_for_its_bytes_only(shard):
    """Kills: a sample read whose request runs to the end of the shard (``bytes=start-``)."""
    with ScriptedHttpServer(shard) as http:
        url = http.url + "/shards-000000.tar"
        index = load_index(url)
        sample = next(read_samples(url, 1, 2, index))
        assert [(r.path, r.range) for r in http.log] == [
            ("/shards-000000.idx", None), ("/shards-000000.tar", f"bytes={index[1].start}-{index[1].end - 1}")]
    assert index[0].end == index[1].start and index[1].end == index[2].start   # its neighbours are not asked for
    assert {k: sample[k] for k in ("json", "mjpeg", "wav")} == {k: raw_sample(shard)[k] for k in ("json", "mjpeg", "wav")}


def test_frames_decode_only_the_frames_asked_for(shard):
    """Every frame but 0 and 8 replaced by bytes no JPEG decoder accepts: frames([0, 8]) still
    gives the two frames, so nothing else was decoded.

    Kills: `frames()` decoding the whole stream and then picking (``np.stack([decode(b) for b in
    self.jpeg(range(self.num_frames))])[indices]``)."""
    raw = raw_sample(shard)
    clip = AVClip.from_sample(raw)
    offsets = clip.meta["frame_offsets"]
    assert clip.num_frames == 32
    garbled = bytearray(raw["mjpeg"])
    for i in set(range(clip.num_frames)) - {0, 8}:
        garbled[offsets[i]:offsets[i + 1]] = b"\x00" * (offsets[i + 1] - offsets[i])
    damaged = AVClip.from_sample({**raw, "mjpeg": bytes(garbled)})
    two = damaged.frames([0, 8])
    assert two.shape == (2, 64, 86, 3) and np.array_equal(two, clip.frames([0, 8]))
    assert not np.array_equal(two[0], two[1])            # the test pattern moves: two different frames
    with pytest.raises(OSError):                          # a garbled frame does fail when asked for
        damaged.frames([1])


def test_audio_converts_only_the_range_asked_for(shard):
    """The memory allocated by ``audio(16000, 320)`` is that of 320 samples (640 bytes of PCM,
    1280 of float32), not of the clip's 32000.

    Kills: `audio()` converting the whole clip and then slicing (``(self.pcm().astype(np.float32)
    / 32768.0)[start:start + length]``)."""
    clip = AVClip.from_sample(raw_sample(shard))
    whole = clip.audio()
    assert clip.num_samples == 32000 and whole.dtype == np.float32
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        part = clip.audio(16000, 320)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert np.array_equal(part, whole[16000:16320]) and np.abs(part).max() > 0
    assert peak < 2 * (640 + 1280) + 2048 < whole.nbytes // 20
