"""Resume in a later epoch, across a pass boundary, then on into the next epoch: at the stream
(`ShardStream.state_dict` / `load_state_dict`, directly and through torchdata's
StatefulDataLoader), the loader (`StreamLoader`) and the training loader (`make_train_loader`).

The data: 24 clips in 7 shards, ``epoch_size`` 30, so epoch 1 holds positions 30-59 of the
endless sequence: the end of pass 1 (positions 30-47) and the start of pass 2 (48-59); a clip's
``visit`` says which. A resumed reader is always a new object (a new process), which starts in
epoch 0: only the state can bring it to epoch 1.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from avshards.index import write_index
from avshards.stream import ShardStream, StreamLoader

COUNTS = [3, 5, 2, 4, 1, 6, 3]
EPOCH_SIZE = 30


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from synth import write_synthetic_shards

    out = tmp_path_factory.mktemp("shards")
    for path in write_synthetic_shards(out, COUNTS, seconds=0.25):
        write_index(path)
    return str(out)


def key_and_visit(clip):
    return clip.key, clip.visit


def stream(folder) -> ShardStream:
    return ShardStream(folder, seed=3, shuffle_buffer=8, chunk=2, epoch_size=EPOCH_SIZE, map_fn=key_and_visit)


def loader(folder, num_workers: int) -> StreamLoader:
    return StreamLoader(stream(folder), batch_size=2, num_workers=num_workers)


def batches(iterable, n: int | None = None) -> list[list[tuple]]:
    """The next ``n`` batches (all when None), as lists of tuples (DataLoaders hand tuples over as lists)."""
    out = []
    for batch in iterable:
        out.append([tuple(x) for x in batch])
        if len(out) == n:
            break
    return out


def flat(bs) -> list[tuple]:
    return [x for b in bs for x in b]


def visits(items) -> set[int]:
    return {visit for _, visit in items}


@pytest.mark.parametrize("epoch_size", [EPOCH_SIZE, 40, 50])
def test_epochs_larger_than_the_data_lose_nothing_at_pass_boundaries(folder, epoch_size):
    """Each epoch holds its positions once each, in the passes they fall in, and loses nothing.

    Kills (a bug this test found, fixed in stream.py): `_PartReader.sample` reusing its open request
    for the next sample of a shard after that request's stop (``cursor[:2] == [url, n]`` with ``n``
    at the stop: a run ending where the next pass's run of the same shard begins). The exhausted
    request read as "<shard> ended after n samples, fewer than its count says" and the shard was
    given up: up to 10 of 40 clips an epoch lost, and the default max_lost stopped the run.
    """
    lo = StreamLoader(ShardStream(folder, seed=3, shuffle_buffer=8, chunk=2, epoch_size=epoch_size,
                                  map_fn=key_and_visit), batch_size=2)
    for epoch in range(4):
        got = flat(batches(lo))
        positions = range(epoch * epoch_size, (epoch + 1) * epoch_size)
        assert Counter(visit for _, visit in got) == Counter(p // sum(COUNTS) for p in positions)
        assert max(Counter(got).values()) == 1
        assert lo.last_epoch_stats["lost"] == 0 and lo.last_epoch_stats["substituted"] == 0


def test_shard_stream_state_resumes_a_later_epoch_exactly(folder):
    """Kills: `ShardStream.load_state_dict` that stops restoring the epoch (``self._resume, self._state
    = dict(state), None``): the new stream read epoch 0 from its start."""
    straight = stream(folder)
    straight.set_epoch(1)
    expected = list(straight)
    first = stream(folder)
    first.set_epoch(1)
    it = iter(first)
    head = [next(it) for _ in range(7)]
    state = json.loads(json.dumps(first.state_dict()))
    resumed = stream(folder)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1 and resumed.state_dict() == state
    rest = list(resumed)
    assert head + rest == expected and visits(rest) == {1, 2}


def test_stateful_dataloader_resumes_a_later_epoch(folder):
    """The same through torchdata's StatefulDataLoader with 2 workers, whose worker states carry the
    epoch (docs/streaming.md: ``set_epoch(e)`` before each epoch; a resumed run gets it from the state)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    def dataloader(epoch=None):
        s = stream(folder)
        if epoch is not None:
            s.set_epoch(epoch)
        return StatefulDataLoader(s, batch_size=2, num_workers=2, collate_fn=list)

    expected = Counter(flat(batches(dataloader(1))))
    first = dataloader(1)
    head = flat(batches(first, 3))
    resumed = dataloader()
    resumed.load_state_dict(first.state_dict())
    rest = flat(batches(resumed))
    assert Counter(head + rest) == expected and len(expected) == EPOCH_SIZE and visits(rest) == {1, 2}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_loader_resumed_in_a_later_epoch_goes_on_exactly(folder, num_workers):
    """An uninterrupted loader through epochs 0, 1, 2 against one interrupted in epoch 1 and resumed
    from its checkpointed state (JSON): the same batches in the same order, epoch 2 too.

    Kills: `StreamLoader.load_state_dict` that stops restoring the epoch (the resumed loader
    read epoch 0 again), and `_Batches` that keeps the resumed position into the next epoch
    (``epoch, earlier = epoch + 1, []`` without ``start = (0, 0)``: epoch 2 lost its first items).
    """
    straight = loader(folder, num_workers)
    epochs = [batches(straight) for _ in range(3)]
    first = loader(folder, num_workers)
    batches(first)                                  # epoch 0; the workers go on into epoch 1
    head = batches(first, 4)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["epoch"] == 1
    resumed = loader(folder, num_workers)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    rest = batches(resumed)
    assert head + rest == epochs[1] and visits(flat(rest)) == {1, 2}
    assert resumed.epoch == 2 and batches(resumed) == epochs[2]


def test_elastic_resume_in_a_later_epoch_then_the_next_epoch_on_the_new_layout(folder):
    """Epoch 1 read by 2 ranks x 1 worker, resumed on 1 rank x 2 workers: the rest of epoch 1 holds
    each position no rank had consumed, once; epoch 2 is the new layout's own, batch for batch.

    Kills: `_Batches` keeping the earlier layouts' record into the next epoch (``epoch, start =
    epoch + 1, (0, 0)`` without ``earlier = []``: epoch 2 skipped what epoch 1's first layout read).
    """
    head, states = [], []
    for rank in range(2):
        lo = StreamLoader(ShardStream(folder, seed=3, shuffle_buffer=8, chunk=2, epoch_size=EPOCH_SIZE,
                                      map_fn=key_and_visit, rank=rank, world_size=2), batch_size=2)
        lo.set_epoch(1)
        head += flat(batches(lo, 2))
        states.append(json.loads(json.dumps(lo.state_dict())))
    resumed = loader(folder, 2)
    resumed.load_state_dict(states)
    assert resumed.epoch == 1
    rest = flat(batches(resumed))
    dropped = resumed.last_epoch_stats["dropped"]
    seen = Counter(head + rest)
    fresh = loader(folder, 2)
    fresh.set_epoch(1)
    assert max(seen.values()) == 1 and set(seen) <= set(flat(batches(fresh)))
    assert len(seen) == EPOCH_SIZE - dropped and visits(rest) == {1, 2}
    fresh = loader(folder, 2)
    fresh.set_epoch(2)
    assert batches(resumed) == batches(fresh)


# --- the training loader (crisscross.data.loader.make_train_loader) ------------------------------
TRAIN = dict(batch_size=2, num_workers=2, seed=2, epoch_size=10,     # 8 clips: epoch 1 is passes 1 and 2
             video_frames=4, audio_seconds=1.0)                       # smaller views than the paper's: faster


def train_batches(it, n: int | None = None) -> list[dict]:
    out = []
    for batch in it:
        out.append({k: batch[k] for k in ("keys", "v1", "a2")})
        if len(out) == n:
            break
    return out


def test_train_loader_resumed_in_a_later_epoch_gives_the_same_views(synth_shards):
    """make_train_loader interrupted in epoch 1 (which crosses a pass boundary) and resumed from its
    state: the same clips with the same views and audio crops as the uninterrupted run, and the
    first batch of epoch 2 too.

    Kills: `StreamLoader.load_state_dict` that stops restoring the epoch, seen through the training
    loader (test_loader.py resumes in epoch 0 only); and `PrepareClip.__call__` drawing with its own
    ``epoch`` instead of the clip's (``self.draw(clip, self.epoch, clip.visit)``): workers that live
    across epochs keep the epoch they started with, so the uninterrupted run drew epoch 1 as epoch 0.
    """
    from crisscross.data.loader import make_train_loader

    out = synth_shards([4, 4], seconds=1.5)
    for path in out.glob("*.tar"):
        write_index(str(path))
    url = str(out)
    straight = make_train_loader(url, **TRAIN)
    assert len(straight) == 6                                   # 2 workers x (2 + 2 + 1 clips)
    train_batches(straight)                                       # epoch 0
    expected = train_batches(straight) + train_batches(straight, 1)   # epoch 1, then epoch 2's first
    first = make_train_loader(url, **TRAIN)
    first.set_epoch(1)
    head = train_batches(first, 2)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make_train_loader(url, **TRAIN)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    got = head + train_batches(resumed)
    assert resumed.epoch == 2
    got += train_batches(resumed, 1)
    assert [b["keys"] for b in got] == [b["keys"] for b in expected] and len(got) == 7
    for x, y in zip(got, expected, strict=True):
        torch.testing.assert_close(x["v1"], y["v1"], atol=0, rtol=0)
        torch.testing.assert_close(x["a2"], y["a2"], atol=0, rtol=0)
