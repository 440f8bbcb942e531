"""Splitting, shuffling, epochs, exact resume and damage accounting of avshards.stream, on local shards."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections import Counter

import pytest

from avshards import remote
from avshards.format import SchemaError
from avshards.index import write_index
from avshards.reader import list_shards, open_shards, read_samples, shard_urls
from avshards.stream import ShardStream, StreamLoader, epoch_summary, partition

COUNTS = [3, 5, 2, 4, 1]          # an odd number of uneven shards: the classic DDP hang


@pytest.fixture
def shards(synth_shards):
    """Factory: synthetic shards (tiny clips) with .idx files for the shards in ``indexed``."""
    def make(counts=COUNTS, indexed=None):
        folder = synth_shards(counts, seconds=0.25)
        for i, path in enumerate(sorted(folder.glob("*.tar"))):
            if indexed is None or i in indexed:
                write_index(str(path))
        return str(folder)
    return make


def keys(batches) -> list[str]:
    return [clip.key for batch in batches for clip in batch]


def drop_every_fifth(clip):
    """A deterministic skip, like the training loader's 'no audio' skip."""
    return None if int(clip.key[-6:]) % 5 == 0 else clip.key


def take(loader, n: int) -> list:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


# ---------------------------------------------------------------------------- pure splitting
def test_partition_2x2_equal_parts_cover_epoch_without_overlap():
    for epoch in range(3):
        parts = [partition(COUNTS, r, 2, w, 2, seed=7, epoch=epoch) for r in range(2) for w in range(2)]
        sizes = [sum(b - a for _, a, b in p) for p in parts]
        assert sizes == [3, 3, 3, 3]        # 15 samples over 4 readers: 3 each, 3 dropped
        seen = Counter((s, i) for p in parts for s, a, b in p for i in range(a, b))
        assert max(seen.values()) == 1 and len(seen) == 12
    assert epoch_summary(15, 2, 2) == {"epoch_size": 15, "per_worker": 3, "per_rank": 6, "dropped": 3, "padded": 0}


def test_partition_pad_wraps_to_epoch_start():
    parts = [partition(COUNTS, r, 2, w, 2, seed=7, epoch=0, pad=True) for r in range(2) for w in range(2)]
    seen = Counter((s, i) for p in parts for s, a, b in p for i in range(a, b))
    assert all(sum(b - a for _, a, b in p) == 4 for p in parts)
    assert len(seen) == 15 and sum(seen.values()) == 16          # everything once, one sample twice
    assert epoch_summary(15, 2, 2, pad=True)["padded"] == 1


def test_partition_shard_order_depends_on_seed_and_epoch_only():
    a = partition(COUNTS, 0, 1, 0, 1, seed=1, epoch=0)
    assert a == partition(COUNTS, 0, 1, 0, 1, seed=1, epoch=0)
    assert a != partition(COUNTS, 0, 1, 0, 1, seed=1, epoch=1)
    assert a != partition(COUNTS, 0, 1, 0, 1, seed=2, epoch=0)
    assert partition(COUNTS, 0, 1, 0, 1, 1, 0, shuffle=False) == [(i, 0, c) for i, c in enumerate(COUNTS)]


def test_fixed_epoch_size_continues_across_passes():
    # 15 samples, epoch size 5: epochs 0-2 are exactly one pass, epochs 3-5 the next one.
    for first in (0, 3):
        seen = Counter((s, i) for e in range(first, first + 3)
                       for s, a, b in partition(COUNTS, 0, 1, 0, 1, seed=3, epoch=e, epoch_size=5)
                       for i in range(a, b))
        assert len(seen) == 15 and max(seen.values()) == 1


def test_partition_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot be split over 4 rank"):
        partition([1, 1], 0, 4, 0, 1, seed=0, epoch=0)


# -------------------------------------------------------------------------------- reading
def test_open_shards_and_range_reads_agree_with_and_without_index(shards):
    folder = shards(indexed={0, 2})          # shards 1, 3, 4 fall back to tar streaming
    clips = list(open_shards(folder))
    assert [c.key for c in clips] == [f"clip{i:06d}" for i in range(15)]
    assert [s.num_samples for s in list_shards(folder)] == COUNTS
    url = shard_urls(folder)[1]
    assert [s["__key__"] for s in read_samples(url, 2, 4)] == ["clip000005", "clip000006"]
    assert len(list_shards(os.path.join(folder, "shards-{000000..000004}.tar"))) == 5


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_yields_equal_counts_per_rank_and_whole_epoch(shards, num_workers):
    folder = shards()
    per_rank = []
    for rank in range(2):
        loader = StreamLoader(ShardStream(folder, seed=5, shuffle_buffer=4, rank=rank, world_size=2),
                              batch_size=2, num_workers=num_workers)
        batches = list(loader)
        assert len(batches) == len(loader)
        per_rank.append(keys(batches))
    nw = max(1, num_workers)
    assert len(per_rank[0]) == len(per_rank[1]) == 15 // (2 * nw) * nw
    union = per_rank[0] + per_rank[1]
    assert len(set(union)) == len(union)      # no sample on two ranks


def test_shuffle_is_deterministic_and_changes_with_epoch(shards):
    folder = shards()
    def order(seed, epoch):
        loader = StreamLoader(ShardStream(folder, seed=seed, shuffle_buffer=4), batch_size=4)
        loader.set_epoch(epoch)
        return keys(loader)
    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) and sorted(order(1, 0)) == sorted(order(1, 1))
    assert order(1, 0) != order(2, 0)


def test_epoch_advances_after_a_full_pass(shards):
    loader = StreamLoader(ShardStream(shards(), seed=0), batch_size=4)
    first = keys(loader)
    assert loader.epoch == 1 and loader.last_epoch_stats["yielded"] == 15
    assert sorted(keys(loader)) == sorted(first)


@pytest.mark.parametrize("world_size,num_workers,skip", [(1, 0, False), (1, 2, False), (2, 2, False),
                                                         (2, 1, True)])
def test_exact_resume_mid_epoch(shards, world_size, num_workers, skip):
    """Interrupt at batch k, resume from the state: both runs together are the full epoch, once."""
    folder = shards(indexed={0, 1, 3})
    map_fn = drop_every_fifth if skip else None
    for rank in range(world_size):
        def loader():
            stream = ShardStream(folder, seed=11, shuffle_buffer=3, map_fn=map_fn, rank=rank,
                                 world_size=world_size)
            return StreamLoader(stream, batch_size=2, num_workers=num_workers)
        full = Counter(str(x) for batch in loader() for x in batch)
        for k in (1, 2):
            first = loader()
            head = take(first, k)
            state = json.loads(json.dumps(first.state_dict()))   # as it would go in a checkpoint
            resumed = loader()
            resumed.load_state_dict(state)
            tail = list(resumed)
            both = Counter(str(x) for batch in head + tail for x in batch)
            assert both == full, f"rank {rank}, interrupted after {k} batches"
            assert resumed.epoch == 1


def test_stream_with_epoch_size_reads_across_passes(shards):
    # epoch size 20 > 15 samples: every epoch's part crosses a pass boundary, re-reading shards.
    loader = StreamLoader(ShardStream(shards(indexed={0, 1}), seed=1, shuffle_buffer=4, epoch_size=20),
                          batch_size=5)
    epochs = [keys(loader) for _ in range(3)]
    assert [len(e) for e in epochs] == [20, 20, 20] and loader.last_epoch_stats["lost"] == 0
    assert set(Counter(sum(epochs, [])).values()) == {4}     # 60 samples = exactly four passes


def test_resume_refuses_another_seed_or_epoch_size(shards):
    folder = shards()
    state = StreamLoader(ShardStream(folder), batch_size=2, num_workers=2).state_dict()
    with pytest.raises(ValueError, match="has seed=0 but this one has seed=1; resume with the same setting"):
        StreamLoader(ShardStream(folder, seed=1), batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="has epoch_size=None but this one has epoch_size=10"):
        StreamLoader(ShardStream(folder, epoch_size=10), batch_size=2).load_state_dict(state)


def test_skipped_items_are_counted_and_made_up_for(shards):
    loader = StreamLoader(ShardStream(shards(), seed=2, map_fn=drop_every_fifth), batch_size=4)
    items = [x for batch in loader for x in batch]
    stats = loader.last_epoch_stats
    assert len(items) == 15 and stats["skipped"] == 3 and stats["substituted"] == 3


@pytest.mark.parametrize("indexed", [True, False])
def test_truncated_shard_keeps_samples_before_the_damage(shards, indexed):
    folder = shards([4, 4], indexed={0, 1} if indexed else set())
    path = os.path.join(folder, "shards-000001.tar")
    with tarfile.open(path) as tar:
        cut = [m for m in tar.getmembers() if m.name.startswith("clip000006")][1].offset_data + 10
    with open(path, "r+b") as f:       # cut inside clip000006: clip000004 and clip000005 survive
        f.truncate(cut)
    stream = ShardStream(folder, shuffle_shards=False, shuffle_buffer=0, max_lost=0.25)
    loader = StreamLoader(stream, batch_size=8)
    got = keys(loader)
    stats = loader.last_epoch_stats
    assert got[:6] == [f"clip{i:06d}" for i in range(6)]
    assert stats["lost"] == 2 and stats["failed_shards"] == 1
    assert len(got) == 8                # made up by re-reading from the part's start


def test_startup_errors_are_one_clear_sentence(shards, tmp_path):
    with pytest.raises(remote.ShardAccessError, match="does not exist"):
        ShardStream(str(tmp_path / "nowhere"))
    with pytest.raises(remote.ShardAccessError, match="does not exist"):
        ShardStream(str(tmp_path / "shards-{000000..000001}.tar"))
    folder = shards([2], indexed=set())
    bad = tmp_path / "future"
    shutil.copytree(folder, bad)
    tar_path = bad / "shards-000000.tar"
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for m, data in members:
            if m.name.endswith(".json"):
                data = json.dumps({**json.loads(data), "schema_version": 99}).encode()
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(SchemaError, match="schema version 99"):
        ShardStream(str(bad))


def test_plain_dataloader_splits_over_workers_and_env_ranks(shards, monkeypatch):
    import torch.utils.data as tud

    folder = shards()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    stream = ShardStream(folder, seed=3)
    assert (stream.rank, stream.world_size) == (1, 2)
    got = [k for batch in tud.DataLoader(stream, batch_size=2, num_workers=2, collate_fn=keys_of)
           for k in batch]
    expected = [f"clip{i:06d}" for s, a, b in
                sum((partition(COUNTS, 1, 2, w, 2, seed=3, epoch=0, shuffle_buffer=stream.shuffle_buffer,
                               chunk=stream.chunk) for w in range(2)), [])
                for i in range(sum(COUNTS[:s]) + a, sum(COUNTS[:s]) + b)]
    assert sorted(got) == sorted(expected) and len(got) == 6


def keys_of(clips) -> list[str]:
    return [c.key for c in clips]


def test_ls_command_lists_shards_and_counts(shards, tmp_path):
    from click.testing import CliRunner

    from avshards.cli import main

    result = CliRunner().invoke(main, ["ls", shards(indexed={0})])
    assert result.exit_code == 0 and "5 shard(s), 15 sample(s)" in result.output
    missing = CliRunner().invoke(main, ["ls", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "does not exist; check the path" in missing.output


def test_clips_read_in_several_passes_of_one_epoch_know_their_pass(shards):
    """epoch_size > the data: each clip comes round once per pass, told which pass (its views differ)."""
    url = shards()
    total = sum(COUNTS)
    stream = ShardStream(url, seed=5, epoch_size=2 * total, map_fn=lambda c: (c.key, c.visit))
    seen = Counter(item for item, state in stream.iter_worker(0, 1) if not state["done"])
    assert len(seen) == 2 * total and set(seen.values()) == {1}
    assert {visit for _, visit in seen} == {0, 1}
    assert {key for key, visit in seen if visit == 0} == {key for key, visit in seen if visit == 1}


def test_skip_drops_samples_from_the_index_before_reading_them(tmp_path):
    """Clips without audio are skipped from their index entry: their bytes are never read (here
    their json is garbage of the same size, which reading would trip over)."""
    import webdataset as wds

    from synth import synthetic_clip

    from avshards.index import scan_tar
    from avshards.stream import Lacks

    path = tmp_path / "shards-000000.tar"
    with wds.TarWriter(str(path), mtime=0) as sink:
        for i in range(12):
            sink.write(synthetic_clip(f"clip{i:06d}", 0.25, has_audio=i % 3 != 1, seed=i))
    with open(path, "r+b") as f:
        for entry in scan_tar(str(path)):
            if "wav" not in entry.members:
                offset, size = entry.members["json"]
                f.seek(offset)
                f.write(b"{" * size)
    write_index(str(path))
    loader = StreamLoader(ShardStream(str(tmp_path), seed=1, shuffle_buffer=8, chunk=2, skip=Lacks("wav")),
                          batch_size=4)
    got = keys(loader)
    stats = loader.last_epoch_stats
    assert all(int(k[-6:]) % 3 != 1 for k in got) and len(got) == 12      # made up by substitutes
    assert stats["skipped"] == 4 and stats["substituted"] == 4
    assert Lacks("mjpeg", "wav")(scan_tar(str(path))[0]) is False and Lacks("wav")(scan_tar(str(path))[1])
