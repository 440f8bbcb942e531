"""What docs/streaming.md and docs/troubleshooting.md promise about failing servers, checked by
counting requests on the server side (HTTP: a scripted server; S3: moto behind a recording proxy).

- "Errors the user must fix (404, access denied) are not retried": exactly one request.
- "A refused or failing request (connection refused, HTTP 5xx / 408 / 429, S3 throttling, timeouts)
  is retried; ``retries`` (default 3) bounds the failures in a row, with exponential back-off
  (``backoff`` seconds, default 0.5, doubling)": a server that refuses twice, then serves, is read;
  one that keeps refusing costs ``retries + 1`` requests and ends with the documented sentence
  (exit 3 from a command).
- ``avshards upload``: "tars and .idx first, manifest.json last", and a store that fails is retried
  ("the upload to <dest> failed after retries ... (exit 3)").
"""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
from click.testing import CliRunner

from avshards import remote
from avshards.cli import main
from avshards.cli_errors import Exit
from avshards.index import write_index
from avshards.reader import open_shards
from avshards.stream import ShardStream, StreamLoader
from servers import RecordingProxy, S3Server, ScriptedHttpServer
from synth import write_synthetic_shards

BACKOFF = 0.05        # doubling: retries wait 0.05, 0.1, 0.2 s
GAVE_UP = "(gave up after 3 retries); check that the server / endpoint is up, then run the same command again."


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    for path in write_synthetic_shards(out, [3, 2, 3], seconds=0.25):
        write_index(path)
    (out / "failures.jsonl").write_text("")        # what a build writes beside its shards
    return out


@pytest.fixture(scope="module")
def http_server(folder):
    with ScriptedHttpServer(folder) as server:
        yield server


@pytest.fixture
def http(http_server):
    http_server.answer_always(None)
    http_server.answer_next()
    http_server.server.log.clear()
    return http_server


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server, RecordingProxy(server.endpoint) as proxy:
        server.client().create_bucket(Bucket="promises")
        yield server, proxy


@pytest.fixture
def s3(s3_server, monkeypatch):
    """boto3 in this process talks to moto through the proxy (which forwards the signed requests)."""
    server, proxy = s3_server
    for name, value in server.env(AWS_ENDPOINT_URL=proxy.url).items():
        monkeypatch.setenv(name, value)
    proxy.slow_down(0)
    proxy.clear()
    return server, proxy


def asked_once_each(log) -> bool:
    return all(n == 1 for n in Counter((r.method, r.path, r.range) for r in log).values())


def waits(log) -> list[float]:
    return [b.at - a.at for a, b in zip(log, log[1:])]


def keys_of_an_epoch(url: str) -> list[str]:
    stream = ShardStream(url, shuffle_shards=False, shuffle_buffer=0, retries=3, backoff=BACKOFF)
    loader = StreamLoader(stream, batch_size=1)
    keys = [c.key for batch in loader for c in batch]
    assert loader.last_epoch_stats["lost"] == 0
    return keys


# --- not retried ---------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [404, 401, 403])
def test_http_missing_or_refused_is_asked_for_once(http, status):
    """Kills: `_http_error` classifying 404 (or 401/403) as transient (retried 3 times, then
    "cannot reach ..."), which no other test notices: they check the message only."""
    url = http.url + ("/nope.tar" if status == 404 else "/shards-000000.tar")
    if status != 404:
        http.answer_always(status)
    with pytest.raises(remote.ShardAccessError, match=f"HTTP {status}") as err:
        remote.read_range(url, 0, 100, retries=3, backoff=BACKOFF)
    assert not isinstance(err.value, remote.TransientError)
    assert [(r.method, r.path) for r in http.log] == [("GET", url.removeprefix(http.url))]
    listed = CliRunner().invoke(main, ["ls", http.url + ("/nope/" if status == 404 else "/")])
    assert listed.exit_code == Exit.USAGE, listed.output            # a command: exit 2, one request more
    assert len(http.log) == 2 and asked_once_each(http.log)


def test_http_stream_start_up_asks_for_a_refused_set_once(http):
    http.answer_always(403)
    with pytest.raises(remote.ShardAccessError, match=r"refused by the server \(HTTP 403 Forbidden\)"):
        ShardStream(http.url + "/", retries=3, backoff=BACKOFF)
    assert [(r.method, r.path) for r in http.log] == [("GET", "/manifest.json")]


def test_s3_missing_key_bucket_and_wrong_keys_are_asked_for_once(s3, folder, monkeypatch):
    """Kills: `_s3_error` treating NoSuchKey / access denied as transient."""
    server, proxy = s3
    url = server.upload_folder(folder, "promises", "once/")
    proxy.clear()
    with pytest.raises(remote.NotFound, match="does not exist in the bucket"):
        remote.read_range(url + "nope.tar", retries=3, backoff=BACKOFF)
    with pytest.raises(remote.ShardAccessError, match="the bucket 'no-such-bucket' does not exist"):
        remote.read_range("s3://no-such-bucket/x.tar", retries=3, backoff=BACKOFF)
    assert [r.path for r in proxy.log] == ["/promises/once/nope.tar", "/no-such-bucket/x.tar"]
    for name, value in (("AWS_SECRET_ACCESS_KEY", "wrong"), ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")):
        monkeypatch.setenv(name, value)
        proxy.clear()
        with pytest.raises(remote.ShardAccessError, match="access denied"):
            ShardStream(url, retries=3, backoff=BACKOFF)
        assert [(r.method, r.path) for r in proxy.log] == [("GET", "/promises/once/manifest.json")]


# --- retried, with back-off, then read ------------------------------------------------------------
@pytest.mark.parametrize("status", [408, 429])
def test_http_408_and_429_are_retried_with_backoff_then_read(http, folder, status):
    """Kills: 408 / 429 dropped from the transient statuses of `_http_error` (a rate-limited
    CDN would then stop a run at once), and a retry loop that does not wait or double its wait."""
    url = http.url + "/shards-000001.tar"
    http.answer_next(status, status)
    assert remote.read_range(url, 10, 2000, retries=3, backoff=BACKOFF) == \
        (folder / "shards-000001.tar").read_bytes()[10:2000]
    log = http.log
    assert [(r.path, r.range) for r in log] == [("/shards-000001.tar", "bytes=10-1999")] * 3
    first, second = waits(log)
    assert first >= BACKOFF and second >= 2 * BACKOFF        # lower bounds: sleeps never end early
    # mid-epoch, through the stream: nothing lost, every clip once
    expected = keys_of_an_epoch(str(folder))
    http.answer_next(status, status)
    assert keys_of_an_epoch(http.url + "/") == expected


def test_s3_slow_down_is_retried_with_backoff_then_read(s3, folder):
    """Kills: 'SlowDown' left out of the transient S3 codes, and a retry loop without back-off."""
    server, proxy = s3
    url = server.upload_folder(folder, "promises", "slow/")
    proxy.clear()
    proxy.slow_down(2)
    assert remote.read_range(url + "shards-000002.tar", 0, 3000, retries=3, backoff=BACKOFF) == \
        (folder / "shards-000002.tar").read_bytes()[:3000]
    assert [(r.method, r.range) for r in proxy.log] == [("GET", "bytes=0-2999")] * 3
    first, second = waits(proxy.log)
    assert first >= BACKOFF and second >= 2 * BACKOFF
    expected = keys_of_an_epoch(str(folder))
    proxy.slow_down(2)
    assert keys_of_an_epoch(url) == expected


# --- give up after the documented number of retries -----------------------------------------------
def test_http_gives_up_after_the_retries_with_the_documented_sentence(http):
    """Kills: a retry loop off by one (``range(retries)``)."""
    http.answer_always(429)
    with pytest.raises(remote.ShardAccessError, match=rf"^cannot reach {http.url}/ after 2 retries \(.*Too Many "
                                                      r"Requests\); check that the server / endpoint is up\.$"):
        ShardStream(http.url + "/", retries=2, backoff=BACKOFF)
    assert [r.path for r in http.log] == ["/manifest.json"] * 3


def test_s3_gives_up_after_the_retries_with_the_documented_sentences(s3, folder):
    """Kills: botocore retrying on its own inside each of our tries (its ``max_attempts`` counts
    retries, so ``max_attempts=1`` doubled every request: 8 requests for 3 retries, with its own
    random waits instead of the documented back-off), and a command that exits 2 (fix your input)
    instead of 3 (try again later) for a store that keeps refusing. Runs the command with the
    defaults: 3 retries after 0.5, 1 and 2 s."""
    server, proxy = s3
    url = server.upload_folder(folder, "promises", "giveup/")
    proxy.clear()
    proxy.slow_down(10 ** 6)
    with pytest.raises(remote.TransientError, match="SlowDown"):
        remote.read_range(url + "shards-000000.tar", retries=0)
    assert len(proxy.log) == 1                                 # retries=0: one request, no more
    proxy.clear()
    with pytest.raises(remote.ShardAccessError, match=rf"^cannot reach {url} after 2 retries \(.*SlowDown.*\); "
                                                      r"check that the server / endpoint is up\.$"):
        ShardStream(url, retries=2, backoff=BACKOFF)
    assert len(proxy.log) == 3
    proxy.clear()
    listed = CliRunner().invoke(main, ["ls", url])
    assert listed.exit_code == Exit.UNREACHABLE and listed.output.rstrip().endswith(GAVE_UP), listed.output
    assert len(proxy.log) == remote.RETRIES + 1


# --- upload ----------------------------------------------------------------------------------------
def test_upload_sends_the_manifest_last(s3, folder):
    """Kills: `_upload_order` sorting by name alone (manifest.json between failures.jsonl and the
    shards: a reader could see a manifest naming shards not uploaded yet)."""
    server, proxy = s3
    result = CliRunner().invoke(main, ["upload", str(folder), "s3://promises/order/", "--quiet"])
    assert result.exit_code == 0, result.output
    puts = [r.path.removeprefix("/promises/order/") for r in proxy.log if r.method == "PUT"]
    assert sorted(puts) == sorted(p.name for p in folder.iterdir()) and len(puts) == 8   # 3 tar, 3 idx, 2 json
    assert puts[-1] == "manifest.json"
    assert [c.key for c in open_shards("s3://promises/order/")] == [c.key for c in open_shards(str(folder))]


def test_upload_retries_a_throttled_store_then_gives_up_with_exit_3(s3, folder, tmp_path):
    """Kills: `remote.upload` calling `upload_file` without `with_retries` (one SlowDown stopped
    `avshards upload`, though its message says "failed after retries")."""
    server, proxy = s3
    proxy.slow_down(1, methods=("PUT",))
    done = CliRunner().invoke(main, ["upload", str(folder), "s3://promises/throttled/", "--quiet"])
    assert done.exit_code == 0, done.output
    assert "8 file(s) uploaded, 0 already there" in done.output
    puts = Counter(r.path for r in proxy.log if r.method == "PUT")
    assert sorted(puts.values()) == [1] * 7 + [2]              # the throttled file was sent again
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(folder / "shards-000000.idx", one)
    proxy.clear()
    proxy.slow_down(10 ** 6, methods=("PUT",))
    failed = CliRunner().invoke(main, ["upload", str(one), "s3://promises/never/"])
    assert failed.exit_code == Exit.UNREACHABLE, failed.output
    assert "Error: the upload to s3://promises/never/ failed after retries (" in failed.output
    assert "run the same command again to resume." in failed.output and "Traceback" not in failed.output
    assert sum(r.method == "PUT" for r in proxy.log) == remote.RETRIES + 1
