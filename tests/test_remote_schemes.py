"""Storage beyond local / HTTP / S3: the fsspec schemes (tested through fsspec's memory://, the same
code gs://, az:// and hf:// run) and HTTP headers from AVSHARDS_HTTP_HEADERS (a server on 127.0.0.1
that wants a bearer token)."""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import ThreadingHTTPServer

import pytest
from click.testing import CliRunner

import avshards
from avshards import remote
from avshards.cli import main
from avshards.reader import list_shards, read_samples
from servers import RangeHandler, reset_faults

fsspec = pytest.importorskip("fsspec")


def clip_data(clips):
    return [(c.key, c.label, bytes(c._mjpeg), c._wav) for c in clips]


@pytest.fixture
def in_memory(synth_shards):
    """A shard set (tars, .idx, manifest) copied into fsspec's memory store; removed afterwards."""
    from avshards.index import write_index

    folder = synth_shards([3, 2])
    for tar in folder.glob("*.tar"):
        write_index(str(tar))
    memory = fsspec.filesystem("memory")
    for path in folder.iterdir():
        memory.pipe(f"/sets/k400/{path.name}", path.read_bytes())
    yield "memory://sets/k400/", folder
    memory.rm("/sets", recursive=True)


def test_fsspec_schemes_share_one_entry_of_the_table():
    assert {"gs", "gcs", "az", "abfs", "hf", "memory"} <= set(remote.SCHEMES)
    assert all(remote.scheme(f"{name}://b/x.tar") is remote.FSSPEC for name in ("gs", "az", "hf", "memory"))


def test_the_four_operations_through_fsspec(in_memory):
    url, folder = in_memory
    tar = remote.join(url, "shards-000000.tar")
    data = (folder / "shards-000000.tar").read_bytes()
    assert remote.read_range(tar, 512, 2048) == data[512:2048]
    assert remote.read_range(tar) == data
    with remote.open_stream(tar, 1024) as stream:
        assert remote.read_exact(stream, 4096) == data[1024:1024 + 4096]
    assert remote.size(tar) == len(data) and remote.size(url + "nope.tar") is None
    assert not remote.exists(url)                                   # a folder is not an object
    names = [u.rsplit("/", 1)[1] for u in remote.list_urls(url)]
    assert names == sorted(p.name for p in folder.iterdir())
    assert all(u.startswith(url) for u in remote.list_urls(url))    # the user's URL form is kept


def test_shards_read_the_same_through_fsspec(in_memory):
    url, folder = in_memory
    assert [s.num_samples for s in list_shards(url)] == [3, 2]
    assert clip_data(avshards.open_shards(url)) == clip_data(avshards.open_shards(str(folder)))
    from avshards.reader import load_index

    index = load_index(url + "shards-000000.tar")
    assert [s["__key__"] for s in read_samples(url + "shards-000000.tar", 1, 3, index)] == \
        [s.key for s in index[1:3]]
    result = CliRunner().invoke(main, ["ls", url])
    assert result.exit_code == 0 and "2 shard(s), 5 sample(s)" in result.output


def test_fsspec_errors_are_classified_like_the_other_schemes(in_memory):
    url, _ = in_memory
    with pytest.raises(remote.NotFound, match="does not exist; check the path"):
        remote.read_range(url + "missing.tar")
    with pytest.raises(remote.NotFound):
        remote.list_urls("memory://no/such/prefix/")

    class Denied(Exception):
        status_code = 403

    class Throttled(Exception):
        code = 503

    assert isinstance(remote._fs_error("gs://b/x.tar", Denied("no")), remote.ShardAccessError)
    assert "access denied" in str(remote._fs_error("gs://b/x.tar", PermissionError("no")))
    assert "gcsfs" in str(remote._fs_error("gs://b/x.tar", PermissionError("no")))
    assert isinstance(remote._fs_error("az://b/x.tar", Throttled("slow down")), remote.TransientError)
    assert isinstance(remote._fs_error("hf://b/x.tar", ConnectionResetError()), remote.TransientError)


# --- HTTP headers ---------------------------------------------------------------------------------
TOKEN = "s3cr3t-t0ken"


class TokenHandler(RangeHandler):
    """A private server: 401 without ``Authorization: Bearer TOKEN`` (and a second header checked)."""

    def send_head(self):
        if self.headers.get("Authorization") != f"Bearer {TOKEN}" or self.headers.get("X-Team") != "vision":
            self.send_error(HTTPStatus.UNAUTHORIZED)
            return None
        return super().send_head()


@pytest.fixture
def private_server(synth_shards):
    folder = synth_shards([2, 2])
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: TokenHandler(*a, directory=str(folder), **kw))
    reset_faults(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()
    server.server_close()


def test_headers_from_the_environment_open_a_private_server(private_server, monkeypatch):
    url, folder = private_server
    monkeypatch.delenv(remote.HEADERS_ENV, raising=False)
    refused = CliRunner().invoke(main, ["ls", url])
    assert refused.exit_code == 2 and "(HTTP 401 Unauthorized)" in refused.output
    assert "credentials in AVSHARDS_HTTP_HEADERS" in refused.output and "Traceback" not in refused.output

    monkeypatch.setenv(remote.HEADERS_ENV, f"Authorization: Bearer {TOKEN}\nX-Team: vision\n")
    listed = CliRunner().invoke(main, ["ls", url])
    assert listed.exit_code == 0 and "2 shard(s), 4 sample(s)" in listed.output
    assert clip_data(avshards.open_shards(url)) == clip_data(avshards.open_shards(str(folder)))   # ranges too
    assert TOKEN not in listed.output


def test_header_lines_are_parsed_strictly(monkeypatch):
    monkeypatch.delenv(remote.HEADERS_ENV, raising=False)
    assert remote.http_headers() == {}
    monkeypatch.setenv(remote.HEADERS_ENV, "Authorization: Bearer a:b\n\n  X-Team :  vision  ")
    assert remote.http_headers() == {"Authorization": "Bearer a:b", "X-Team": "vision"}
    monkeypatch.setenv(remote.HEADERS_ENV, "Authorization: ok\nBearer leaked")
    with pytest.raises(remote.ShardAccessError, match="line 2 of AVSHARDS_HTTP_HEADERS") as err:
        remote.http_headers()
    assert "leaked" not in str(err.value)            # a token written without its header name stays out
