"""Resuming avshards.stream: on another world size or worker count (elastic), with workers that live
across epochs, from old-format states, and through torchdata's StatefulDataLoader."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter

import pytest

from avshards.index import write_index
from avshards.stream import ShardStream, StreamLoader, merge_states

COUNTS = [3, 5, 2, 4, 1, 6, 3]          # 24 clips in uneven shards


@pytest.fixture
def folder(synth_shards):
    out = synth_shards(COUNTS, seconds=0.25)
    for path in out.glob("*.tar"):
        write_index(str(path))
    return str(out)


def key_and_visit(clip):
    return clip.key, clip.visit


def key_and_pid(clip):
    return clip.key, os.getpid()


def loader(folder, rank=0, world_size=1, num_workers=0, batch_size=2, **kw):
    stream = ShardStream(folder, seed=3, shuffle_buffer=8, chunk=2, map_fn=key_and_visit, rank=rank,
                         world_size=world_size, **kw)
    return StreamLoader(stream, batch_size=batch_size, num_workers=num_workers)


def take(it, n: int) -> list:
    out = []
    for batch in it:
        out.append(batch)
        if len(out) == n:
            break
    return out


def items(batches) -> list:
    return [tuple(x) for batch in batches for x in batch]   # the DataLoader hands tuples over as lists


def run_ranks(folder, world_size, num_workers, batches, states=None, epoch=None, **kw):
    """Each rank of a layout takes ``batches`` batches (None: to the end of the epoch), after
    loading ``states`` (all ranks' states of the run before); returns (items, states as JSON,
    the loaders)."""
    seen, out, loaders = [], [], []
    for rank in range(world_size):
        lo = loader(folder, rank, world_size, num_workers, **kw)
        if epoch is not None:
            lo.set_epoch(epoch)
        if states is not None:
            lo.load_state_dict(json.loads(json.dumps(states)))
        seen += items(take(lo, batches) if batches else lo)
        out.append(lo.state_dict())
        loaders.append(lo)
    return seen, out, loaders


def whole_epoch(folder, epoch=0, **kw) -> Counter:
    lo = loader(folder, **kw)
    lo.set_epoch(epoch)
    return Counter(items(lo))


@pytest.mark.parametrize("before,after", [((2, 1), (1, 1)), ((1, 1), (1, 2)), ((2, 2), (3, 1))])
def test_elastic_resume_sees_every_clip_of_the_epoch_once(folder, before, after):
    """Interrupt a layout mid-epoch, resume on another: the epoch's clips are each seen exactly once."""
    head, states, _ = run_ranks(folder, *before, batches=2)
    tail, _, loaders = run_ranks(folder, *after, batches=None, states=states)
    seen = Counter(head + tail)
    dropped = loaders[0].last_epoch_stats["dropped"]          # what the new layout cannot split evenly
    assert max(seen.values()) == 1 and len(seen) == sum(COUNTS) - dropped
    assert set(seen) <= {(f"clip{i:06d}", 0) for i in range(sum(COUNTS))}
    assert sum(lo.last_epoch_stats["yielded"] for lo in loaders) + dropped == sum(COUNTS)
    assert all(lo.epoch == 1 for lo in loaders)


def test_two_elastic_resumes_in_a_row_in_a_later_epoch_across_passes(folder):
    """epoch_size 30 > 24 clips: epoch 1 crosses a pass boundary (a clip comes twice, as two visits)."""
    kw = {"epoch_size": 30, "epoch": 1}
    first, states, _ = run_ranks(folder, 2, 1, batches=2, **kw)
    second, states, _ = run_ranks(folder, 1, 2, batches=3, states=states, **kw)
    assert len(states) == 1 and len(states[0]["earlier"]) == 1 and states[0]["epoch"] == 1
    third, _, loaders = run_ranks(folder, 3, 1, batches=None, states=states, **kw)
    seen = Counter(first + second + third)
    full = whole_epoch(folder, epoch=1, epoch_size=30)
    dropped = loaders[0].last_epoch_stats["dropped"]
    assert max(seen.values()) == 1 and len(seen) == 30 - dropped and len(full) == 30
    assert set(seen) <= set(full) and {visit for _, visit in seen} == {1, 2}   # positions 30-59: passes 1, 2
    assert all(lo.epoch == 2 for lo in loaders)               # the epoch ran to its end


def test_same_layout_resume_is_exact_in_order(folder):
    full = items(loader(folder, num_workers=2))
    first = loader(folder, num_workers=2)
    head = items(take(first, 3))
    resumed = loader(folder, num_workers=2, batch_size=5)     # the batch size may change
    resumed.load_state_dict(first.state_dict())
    assert sorted(head + items(resumed)) == sorted(full)
    assert resumed.epoch == 1


def test_state_of_one_rank_alone_cannot_resume_another_layout(folder):
    _, states, _ = run_ranks(folder, 2, 1, batches=1)
    with pytest.raises(ValueError, match="from rank 0's state alone; pass all ranks' loader states"):
        loader(folder).load_state_dict(states[0])
    with pytest.raises(ValueError, match="got ranks \\[1\\] of a 2-rank run; pass every rank's state"):
        merge_states(states[1:])
    merged = merge_states(list(reversed(states)))
    assert merged["rank"] is None and len(merged["positions"]) == 2
    again = loader(folder, rank=1, world_size=2)               # a merged state also resumes each rank exactly
    again.load_state_dict(merged)
    assert again.positions == [tuple(states[1]["positions"][0])]


def test_old_format_state_continues_at_the_next_epoch_with_a_warning(folder, caplog):
    old = {"epoch": 2, "seed": 3, "rank": 0, "world_size": 1, "num_workers": 0, "epoch_size": None,
           "positions": [[6, 6]]}
    lo = loader(folder)
    with caplog.at_level(logging.WARNING, "avshards.stream"):
        lo.load_state_dict(old)
    assert lo.epoch == 3 and "older avshards whose reading order differs" in caplog.text
    lo.load_state_dict({**old, "positions": [[0, 0]]})        # not started: that epoch, from its start
    assert lo.epoch == 2 and sum(1 for _ in lo) == len(lo)


def test_workers_live_across_epochs_and_epochs_stay_exact(folder):
    stream = ShardStream(folder, seed=3, shuffle_buffer=8, chunk=2, map_fn=key_and_pid)
    lo = StreamLoader(stream, batch_size=3, num_workers=2)
    pids, epochs = [], []
    for _ in range(3):
        got = items(lo)
        pids.append({pid for _, pid in got})
        epochs.append([key for key, _ in got])
    assert len(pids[0]) == 2 and pids[0] == pids[1] == pids[2] and os.getpid() not in pids[0]
    for e, keys in enumerate(epochs):            # each equals a fresh loader's epoch, batch for batch
        fresh = StreamLoader(ShardStream(folder, seed=3, shuffle_buffer=8, chunk=2, map_fn=key_and_pid),
                             batch_size=3, num_workers=2)
        fresh.set_epoch(e)
        assert [key for key, _ in items(fresh)] == keys
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])


def test_resume_mid_epoch_after_persistent_epochs(folder):
    """State saved in epoch 2 of a loader whose workers went on from epoch 0: exact resume."""
    lo = loader(folder, num_workers=2)
    for _ in range(2):
        list(lo)
    head = items(take(lo, 2))
    state = lo.state_dict()
    assert state["epoch"] == 2
    resumed = loader(folder, num_workers=2)
    resumed.load_state_dict(state)
    assert sorted(head + items(resumed)) == sorted(whole_epoch(folder, epoch=2, num_workers=2).elements())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_torchdata_stateful_dataloader_resumes_mid_epoch(folder, num_workers):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def dataloader():
        stream = ShardStream(folder, seed=3, shuffle_buffer=8, chunk=2, map_fn=key_and_visit)
        return StatefulDataLoader(stream, batch_size=2, num_workers=num_workers, collate_fn=list)

    full = Counter(items(dataloader()))
    first = dataloader()
    head = items(take(first, 3))
    state = first.state_dict()
    second = dataloader()
    second.load_state_dict(state)
    tail = items(second)
    assert Counter(head + tail) == full and len(full) == sum(COUNTS) // max(1, num_workers) * max(1, num_workers)
