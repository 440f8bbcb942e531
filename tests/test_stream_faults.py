"""Integrity under faults, on real servers on 127.0.0.1: every clip exactly once per epoch, or a clear
error before training starts."""

from __future__ import annotations

from collections import Counter

import pytest

from avshards import remote
from avshards.index import write_index
from avshards.stream import ShardStream, StreamLoader
from servers import HttpServer, S3Server

COUNTS = [6, 5, 7, 6]


@pytest.fixture
def folder(synth_shards):
    out = synth_shards(COUNTS, seconds=1.0)        # ~25 kB per clip: responses of several clips
    for path in out.glob("*.tar"):
        write_index(str(path))
    return out


def epoch_keys(url: str, num_workers: int = 2, **kw) -> tuple[Counter, dict]:
    stream = ShardStream(url, seed=1, shuffle_buffer=8, chunk=3, **{"retries": 4, "backoff": 0.02, **kw})
    loader = StreamLoader(stream, batch_size=4, num_workers=num_workers)
    keys = Counter(clip.key for batch in loader for clip in batch)
    return keys, loader.last_epoch_stats


def every_clip_once(keys: Counter) -> bool:
    return keys == Counter(f"clip{i:06d}" for i in range(sum(COUNTS)))


def test_every_response_cut_half_way_loses_nothing(folder):
    with HttpServer(folder) as server:
        url = server.url + "/"
        stream = ShardStream(url)                  # start-up reads before the cuts begin
        server.cut_every_response_half_way()
        keys, stats = epoch_keys(url, num_workers=0, shards=stream.shards)
    assert every_clip_once(keys)
    assert stats["lost"] == 0 and stats["resumed"] > stats["requests"] / 2 > 0   # resumed at the byte


def restarted_epoch(url: str, server) -> tuple[Counter, dict]:
    """One epoch in this process, the server restarting (0.5 s down) right after the first batch."""
    stream = ShardStream(url, seed=1, shuffle_buffer=8, chunk=3, retries=6, backoff=0.05)
    loader = StreamLoader(stream, batch_size=2, num_workers=0)
    keys, restart = Counter(), None
    for batch in loader:
        keys.update(clip.key for clip in batch)
        if restart is None:
            restart = server.restart_in_background(0.5)
    restart.join()
    return keys, loader.last_epoch_stats


def test_server_restart_mid_epoch_loses_nothing(folder):
    server = HttpServer(folder)
    try:
        _, calm = epoch_keys(server.url + "/", num_workers=0, retries=6, backoff=0.05)
        keys, stats = restarted_epoch(server.url + "/", server)
    finally:
        server.stop()
    assert every_clip_once(keys) and stats["lost"] == 0
    assert stats["requests"] > calm["requests"]           # refused requests were retried


def test_python_http_server_ignoring_range_fails_before_training(folder):
    with HttpServer(folder, ranges=False) as server:
        with pytest.raises(remote.ShardAccessError, match="the server ignores HTTP Range requests; serve the "
                                                          "shards with a server that supports them"):
            ShardStream(server.url + "/")
        from crisscross.data.loader import make_train_loader

        with pytest.raises(remote.ShardAccessError, match="ignores HTTP Range requests"):
            make_train_loader(server.url + "/", batch_size=2)


def test_s3_two_workers_and_a_restart_every_clip_once(folder, monkeypatch):
    server = S3Server()
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        url = server.upload_folder(folder, "faults", "k400/")
        keys, stats = epoch_keys(url, num_workers=2)
        assert every_clip_once(keys) and stats["lost"] == 0
        assert stats["requests"] >= sum(COUNTS) / 3       # one ranged GET per chunk run (3 clips)
        _, calm = epoch_keys(url, num_workers=0, retries=6, backoff=0.05)
        keys, stats = restarted_epoch(url, server)
        assert every_clip_once(keys) and stats["lost"] == 0 and stats["requests"] > calm["requests"]
    finally:
        server.stop()
