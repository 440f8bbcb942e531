import numpy as np
import pytest

from avshards import open_shards
from avshards.format import AVClip, SchemaError, split_jpeg_stream


def test_written_clips_read_back_exactly(synth_shards):
    folder = synth_shards([3, 2], seconds=1.5)
    clips = list(open_shards(str(folder)))
    assert [c.key for c in clips] == [f"clip{i:06d}" for i in range(5)]
    c = clips[1]
    assert c.num_frames == 24 and c.num_samples == 24000 and c.has_audio
    frames = c.frames([0, 5, 23])
    assert frames.shape == (3, 24, 32, 3) and frames.dtype == np.uint8
    # frame i is flat grey (i*7) in its lower right quadrant
    assert abs(int(frames[1, -1, -1, 0]) - 35) <= 2
    assert abs(int(frames[2, -1, -1, 0]) - 161) <= 2
    assert split_jpeg_stream(b"".join(c.jpeg(range(c.num_frames)))) == [
        o - c.meta["frame_offsets"][0] for o in c.meta["frame_offsets"]]


def test_audio_slices_are_exact(synth_shards):
    clip = next(iter(open_shards(str(synth_shards([1])))))
    whole = clip.audio()
    assert whole.dtype == np.float32 and np.abs(whole).max() <= 1.0
    np.testing.assert_array_equal(clip.audio(1000, 500), whole[1000:1500])
    assert len(clip.audio(clip.num_samples - 10, 100)) == 10


def test_unknown_schema_version_is_refused_clearly():
    sample = {"__key__": "k", "json": b'{"schema": "avshards.clip", "schema_version": 99}', "mjpeg": b""}
    with pytest.raises(SchemaError, match="schema version 99.*upgrade avshards"):
        AVClip.from_sample(sample)
