"""Streaming shards for training: equal splits over ranks and workers, seeded shuffles, epochs, exact resume.

The model (see docs/streaming.md):

- All passes over the data form one endless sequence: pass ``p`` is every shard in the order
  ``permutation(seed, p)``. Epoch ``e`` is positions ``[e * N, (e + 1) * N)`` of that sequence,
  with ``N`` the fixed ``epoch_size`` (the sequence continues across passes) or, by default, the
  number of samples (an epoch is a true pass).
- The epoch is cut into ``world_size * num_workers`` contiguous parts of EQUAL length ``L``
  (:func:`partition`): the remainder is dropped, or, with ``pad=True``, parts are completed by
  wrapping around to the epoch's start. A part may start and end mid-shard (byte ranges via the
  index). Every rank therefore yields the same number of samples: no DDP hang.
- A part is read in blocks of ``shuffle_buffer`` consecutive samples, each permuted by
  ``(seed, epoch, rank, worker, block)`` - the memory of a shuffle buffer of that size, but a pure
  function of the position, which is what makes resume exact.
- Each worker's position is (samples read, items yielded). :class:`StreamLoader` (a DataLoader
  wrapper) records the position carried by every batch it hands out, so its ``state_dict()`` is
  exactly what was consumed, and ``load_state_dict()`` restarts each worker right after it.
- ``map_fn(clip)`` runs in the worker; items it maps to None are skipped and counted, and so are
  samples lost to read errors; the worker then reads on, wrapping around its part, until it has
  yielded ``L`` items, so skips never make ranks unequal.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data as tud

from avshards import remote
from avshards.format import AVClip, SchemaError
from avshards.index import IndexedSample
from avshards.reader import ShardInfo, list_shards, load_index, read_samples

log = logging.getLogger("avshards.stream")

Segment = tuple[int, int, int]   # (shard index, first sample, stop sample)


# ------------------------------------------------------------------------------ pure splitting
def shard_order(num_shards: int, seed: int, pass_index: int, shuffle: bool = True) -> list[int]:
    """The shard order of one pass over the data: a permutation seeded by (seed, pass)."""
    if not shuffle:
        return list(range(num_shards))
    return np.random.default_rng([seed, pass_index]).permutation(num_shards).tolist()


def part_length(num_samples: int, parts: int, pad: bool = False) -> int:
    """Samples per part when ``num_samples`` are cut into ``parts`` equal parts."""
    return -(-num_samples // parts) if pad else num_samples // parts


def _global_segments(counts: Sequence[int], seed: int, shuffle: bool, g0: int,
                     g1: int) -> list[tuple[int, int, int, int]]:
    """(shard, start, stop, pass index) segments covering positions ``[g0, g1)`` of the endless
    sequence of passes."""
    total, out = sum(counts), []
    while g0 < g1:
        pass_index, offset = divmod(g0, total)
        order = shard_order(len(counts), seed, pass_index, shuffle)
        ends = np.cumsum([counts[s] for s in order]).tolist()
        stop_in_pass = min(total, offset + g1 - g0)
        i, pos = bisect.bisect_right(ends, offset), offset
        while pos < stop_in_pass:
            begin = ends[i] - counts[order[i]]
            stop = min(ends[i], stop_in_pass)
            out.append((order[i], pos - begin, stop - begin, pass_index))
            pos, i = stop, i + 1
        g0 += stop_in_pass - offset
    return [s for s in out if s[2] > s[1]]


def partition(counts: Sequence[int], rank: int, world_size: int, worker: int, num_workers: int,
              seed: int, epoch: int, epoch_size: int | None = None, shuffle: bool = True,
              pad: bool = False) -> list[Segment]:
    """The samples of (rank, worker) in ``epoch``: a list of (shard, start, stop), in reading order.

    ``counts[i]`` is the sample count of shard i. Every (rank, worker) gets the same number of
    samples, ``part_length(epoch_size or sum(counts), world_size * num_workers, pad)``.
    """
    return [seg[:3] for seg in partition_passes(counts, rank, world_size, worker, num_workers, seed, epoch,
                                               epoch_size, shuffle, pad)]


def partition_passes(counts: Sequence[int], rank: int, world_size: int, worker: int, num_workers: int,
                     seed: int, epoch: int, epoch_size: int | None = None, shuffle: bool = True,
                     pad: bool = False) -> list[tuple[int, int, int, int]]:
    """:func:`partition` with each segment's pass index over the data: a clip read in several
    passes of one epoch (``epoch_size`` larger than the data) is told which visit it is."""
    total = sum(counts)
    size = epoch_size or total
    parts = world_size * num_workers
    length = part_length(size, parts, pad)
    if total == 0 or length == 0:
        raise ValueError(f"{size} samples cannot be split over {world_size} rank(s) x {num_workers} "
                         "worker(s); use fewer workers/ranks, more data, or pad=True.")
    # Epoch-relative [a, b) pieces; with padding a part wraps around to the start of the epoch.
    pieces, a, left = [], (rank * num_workers + worker) * length, length
    while left:
        a %= size
        b = min(size, a + left)
        pieces.append((a, b))
        left, a = left - (b - a), b
    base = epoch * size
    return [seg for a, b in pieces for seg in _global_segments(counts, seed, shuffle, base + a, base + b)]


def epoch_summary(total: int, world_size: int, num_workers: int, epoch_size: int | None = None,
                  pad: bool = False) -> dict[str, int]:
    """Per-epoch accounting: samples per part, per rank, and how many were dropped or padded."""
    size = epoch_size or total
    parts = world_size * num_workers
    length = part_length(size, parts, pad)
    return {"epoch_size": size, "per_worker": length, "per_rank": length * num_workers,
            "dropped": max(0, size - length * parts), "padded": max(0, length * parts - size)}


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): given ones, else torch.distributed when initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_info() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker, (0, 1) in the main process."""
    info = tud.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


# --------------------------------------------------------------------------------- the dataset
class ShardStream(tud.IterableDataset):
    """Clips (or ``map_fn(clip)``) of the shards at ``url``, split over ranks and DataLoader workers.

    Args:
        url: folder, brace pattern, ``http(s)://`` or ``s3://bucket/prefix/``.
        seed: seeds the shard order of each pass and the within-block sample shuffle.
        shuffle_buffer: block size of the sample shuffle (0: read in shard order).
        epoch_size: samples per epoch over all ranks (Table S10's "epoch size"; the sequence goes
            on across passes); None: one true pass per epoch.
        map_fn: picklable function applied in the worker; None results are skipped and counted.
        rank, world_size: default from torch.distributed, else RANK / WORLD_SIZE, else 0 / 1.
        pad: complete the last parts by wrapping around instead of dropping the remainder.
        shuffle_shards: permute the shard order every pass.
        retries, backoff: retry transient read errors, sleeping backoff * 2**i.

    The first shard is checked at construction, so a wrong URL, missing object, bad credentials or
    an unknown schema fail here with one clear sentence (:class:`avshards.remote.ShardAccessError`
    or :class:`avshards.format.SchemaError`). For exact resume iterate through :class:`StreamLoader`.
    """

    def __init__(self, url: str, seed: int = 0, shuffle_buffer: int = 0, epoch_size: int | None = None,
                 map_fn: Callable[[AVClip], Any] | None = None, rank: int | None = None,
                 world_size: int | None = None, pad: bool = False, shuffle_shards: bool = True,
                 retries: int = remote.RETRIES, backoff: float = remote.BACKOFF,
                 shards: list[ShardInfo] | None = None):
        super().__init__()
        self.url, self.seed, self.shuffle_buffer, self.epoch_size = url, seed, shuffle_buffer, epoch_size
        self.map_fn, self.pad, self.shuffle_shards = map_fn, pad, shuffle_shards
        self.retries, self.backoff = retries, backoff
        self.rank, self.world_size = dist_info(rank, world_size)
        self.epoch = 0
        self.positions: list[tuple[int, int]] | None = None   # per worker: (read, yielded)
        self.shards = shards if shards is not None else self._start_up()

    # start-up ----------------------------------------------------------------------------------
    def _start_up(self) -> list[ShardInfo]:
        """List the shards and read the first sample, turning every failure into one sentence."""
        try:
            shards = list_shards(self.url, self.retries, self.backoff)
            first = next((s for s in shards if s.num_samples), None)
            if first is None:
                raise remote.ShardAccessError(f"{self.url} holds no samples; check the shards.")
            index = load_index(first.url, self.retries, self.backoff)
            samples = read_samples(first.url, 0, 1, index, self.retries, self.backoff)
            sample = next(samples)
            samples.close()
            AVClip.from_sample(sample)   # checks the schema version
        except remote.TransientError as err:
            raise remote.ShardAccessError(f"cannot reach {self.url} after {self.retries} retries ({err}); "
                                          "check that the server / endpoint is up.") from None
        except StopIteration:
            raise remote.ShardAccessError(f"{first.url} is empty; rebuild it with `avshards build`.") from None
        except OSError as err:
            if isinstance(err, remote.ShardAccessError):
                raise
            raise remote.ShardAccessError(f"cannot read {self.url}: {err}") from None
        return shards

    @property
    def counts(self) -> list[int]:
        return [s.num_samples for s in self.shards]

    def summary(self, num_workers: int = 1) -> dict[str, int]:
        """Per-epoch accounting for ``num_workers`` DataLoader workers (see :func:`epoch_summary`)."""
        return epoch_summary(sum(self.counts), self.world_size, num_workers, self.epoch_size, self.pad)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shard order, shuffles and, with epoch_size, where in the data it starts)."""
        self.epoch = epoch

    # iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        for item, state in self.iter_worker(*worker_info()):
            if not state["done"]:
                yield item

    def iter_worker(self, worker: int, num_workers: int) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Yield (item, state) for one worker's part; state holds its position and counts.

        The last pair is (None, final state) with ``state["done"]`` true: it carries the counts
        of what was skipped or lost after the last item.
        """
        segments = partition_passes(self.counts, self.rank, self.world_size, worker, num_workers,
                                    self.seed, self.epoch, self.epoch_size, self.shuffle_shards, self.pad)
        start = (self.positions or [(0, 0)] * num_workers)[worker]
        yield from _PartReader(self, segments, worker).run(*start)


class _PartReader:
    """Reads one worker's part block by block; keeps the counts of what was skipped or lost."""

    def __init__(self, stream: ShardStream, segments: list[tuple[int, int, int, int]], worker: int):
        self.s, self.segments, self.worker = stream, segments, worker
        self.length = sum(b - a for _, a, b, _ in segments)
        self.starts = np.cumsum([0] + [b - a for _, a, b, _ in segments]).tolist()
        self.block = stream.shuffle_buffer if stream.shuffle_buffer > 1 else 16
        self.indexes: dict[str, list[IndexedSample] | None] = {}
        self.failed: set[str] = set()
        self.cursor: tuple[str, int, int, Iterator] | None = None   # (url, next, until, samples)
        self.stats = {"skipped": 0, "lost": 0, "failed_shards": 0, "rewound": 0}

    def run(self, read: int, yielded: int) -> Iterator[tuple[Any, dict[str, Any]]]:
        s, length = self.s, self.length
        since = 0   # reads since the last yield: a whole part without one means nothing is readable
        while yielded < length and since < length:
            rnd, pos = divmod(read, length)
            b = pos // self.block
            lo, hi = b * self.block, min(length, (b + 1) * self.block)
            clips = self.read_block(lo, hi, count_lost=rnd == 0)
            order = self.order(b, rnd, hi - lo)
            for j in range(pos - lo, hi - lo):
                clip = clips[order[j]]
                read, since = read + 1, since + 1
                if clip is None:
                    continue
                item = clip if s.map_fn is None else s.map_fn(clip)
                if item is None:
                    self.stats["skipped"] += 1
                    continue
                yielded, since = yielded + 1, 0
                yield item, self.state(read, yielded, done=False)
                if yielded == length:
                    break
        if yielded < length:
            log.warning("worker %d of rank %d read a whole round of its part without a usable sample; it "
                        "stops at %d of %d items (%s); ranks may now be uneven", self.worker, s.rank,
                        yielded, length, self.stats)
        yield None, self.state(read, yielded, done=True)

    def state(self, read: int, yielded: int, done: bool) -> dict[str, Any]:
        self.stats["rewound"] = max(0, read - self.length)
        return {"worker": self.worker, "read": read, "yielded": yielded, "done": done, **self.stats}

    def order(self, block: int, rnd: int, n: int) -> list[int]:
        if self.s.shuffle_buffer <= 1:
            return list(range(n))
        s = self.s
        rng = np.random.default_rng([s.seed, s.epoch, s.rank, self.worker, block, rnd])
        return rng.permutation(n).tolist()

    def read_block(self, lo: int, hi: int, count_lost: bool) -> list[AVClip | None]:
        """Clips at part positions ``[lo, hi)``; None where a sample could not be read."""
        out: list[AVClip | None] = []
        i = bisect.bisect_right(self.starts, lo) - 1
        while lo < hi:
            shard, a, b, pass_index = self.segments[i]
            first = a + lo - self.starts[i]
            stop = min(b, first + hi - lo)
            clips = self.read_shard(self.s.shards[shard].url, first, stop, b, count_lost)
            for clip in clips:
                if clip is not None:   # which pass over the data this read is (fresh views per pass)
                    clip.visit = pass_index
            out += clips
            lo += stop - first
            i += 1
        return out

    def read_shard(self, url: str, start: int, stop: int, until: int, count_lost: bool) -> list[AVClip | None]:
        clips: list[AVClip | None] = []
        if url not in self.failed:
            try:
                for sample in self.samples(url, start, stop, until):
                    clips.append(AVClip.from_sample(sample))
            except SchemaError:
                raise
            except Exception as err:  # transient after retries, truncation, object gone: skip the shard
                self.failed.add(url)
                self.close_cursor()
                if count_lost:
                    self.stats["failed_shards"] += 1
                log.warning("skipping the rest of %s after %d samples: %s", url, start + len(clips), err)
        if count_lost:
            self.stats["lost"] += stop - start - len(clips)
        return clips + [None] * (stop - start - len(clips))

    def close_cursor(self) -> None:
        if self.cursor is not None:
            self.cursor[3].close()   # closes the request behind it
            self.cursor = None

    def samples(self, url: str, start: int, stop: int, until: int) -> Iterator[dict[str, Any]]:
        """Samples ``[start, stop)`` of a shard whose segment in this part ends at ``until``.

        One request covers the rest of the segment and stays open between blocks (the next block
        continues where this one stopped); it is reopened only after a jump (resume, wrap-around).
        """
        s = self.s
        if self.cursor is None or self.cursor[:3] != (url, start, until):
            self.close_cursor()
            if url not in self.indexes:
                self.indexes[url] = load_index(url, s.retries, s.backoff)
            it = read_samples(url, start, until, self.indexes[url], s.retries, s.backoff)
            self.cursor = (url, start, until, it)
        it = self.cursor[3]
        for i in range(start, stop):
            sample = next(it, None)
            if sample is None:
                raise EOFError(f"{url} ended after {i} samples, fewer than its count says")
            self.cursor = (url, i + 1, until, it)
            yield sample


# ------------------------------------------------------------------------------- the loader
class _Batches(tud.IterableDataset):
    """Worker side of :class:`StreamLoader`: whole batches, each with the worker's position after it."""

    def __init__(self, stream: ShardStream, batch_size: int, collate_fn: Callable[[list], Any]):
        super().__init__()
        self.stream, self.batch_size, self.collate_fn = stream, batch_size, collate_fn

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Any]]:
        items, last = [], None
        for item, state in self.stream.iter_worker(*worker_info()):
            if state["done"]:
                if items:
                    yield last, self.collate_fn(items)
                yield state, None        # the final counts, no batch
                return
            items.append(item)
            last = state
            if len(items) == self.batch_size:
                yield state, self.collate_fn(items)
                items = []


def _as_list(items: list) -> list:
    return items


class StreamLoader:
    """A DataLoader over a :class:`ShardStream` with an exact, checkpointable position.

    Every batch comes from one worker and carries that worker's position after it; the loader
    keeps the position of the last batch it handed out per worker, so ``state_dict()`` describes
    exactly what the training loop consumed, whatever was prefetched. An epoch that runs to the
    end advances ``epoch`` by one. Resuming needs the same ``num_workers`` and world size
    (they define the parts); the batch size may change.

    Args:
        stream: the dataset.
        batch_size: items per batch (the last batch of each worker may be smaller).
        num_workers: DataLoader worker processes (0: read in this process).
        collate_fn: turns a list of items into a batch (default: keep the list).
        **loader_kw: passed to torch's DataLoader (pin_memory, prefetch_factor, ...).
    """

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int = 0,
                 collate_fn: Callable[[list], Any] = _as_list, **loader_kw: Any):
        self.stream, self.batch_size, self.num_workers = stream, batch_size, num_workers
        self.collate_fn, self.loader_kw = collate_fn, loader_kw
        self.epoch = 0
        self.positions = [(0, 0)] * max(1, num_workers)
        self.worker_stats: list[dict[str, int]] = [{} for _ in self.positions]
        self.last_epoch_stats: dict[str, int] = {}   # .stats of the last epoch that ran to its end
        summary = stream.summary(max(1, num_workers))
        if summary["dropped"] or summary["padded"]:
            log.info("avshards: %d samples per epoch over %d rank(s) x %d worker(s): %d dropped, %d padded",
                     summary["epoch_size"], stream.world_size, max(1, num_workers), summary["dropped"],
                     summary["padded"])

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        per_worker = self.stream.summary(max(1, self.num_workers))["per_worker"]
        return max(1, self.num_workers) * math.ceil(per_worker / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` (no-op when already in it, so a resumed position is kept)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.positions = [(0, 0)] * len(self.positions)
            self.worker_stats = [{} for _ in self.positions]

    def __iter__(self) -> Iterator[Any]:
        self.stream.set_epoch(self.epoch)
        self.stream.positions = list(self.positions)
        loader = tud.DataLoader(_Batches(self.stream, self.batch_size, self.collate_fn), batch_size=None,
                                num_workers=self.num_workers, **self.loader_kw)
        for state, batch in loader:
            w = state["worker"]
            self.positions[w] = (state["read"], state["yielded"])
            self.worker_stats[w] = {k: v for k, v in state.items()
                                    if k not in ("worker", "read", "yielded", "done")}
            if batch is not None:
                yield batch
        self.last_epoch_stats = self.stats
        log.info("avshards epoch %d (rank %d): %s", self.epoch, self.stream.rank, self.last_epoch_stats)
        self.set_epoch(self.epoch + 1)

    @property
    def stats(self) -> dict[str, int]:
        """This rank's counts in the current epoch: yielded, skipped (map_fn None), lost, failed shards,
        rewound (extra reads to make up for skipped/lost), and the epoch's dropped / padded samples."""
        out = {"yielded": sum(y for _, y in self.positions)}
        for ws in self.worker_stats:
            for k, v in ws.items():
                out[k] = out.get(k, 0) + v
        summary = self.stream.summary(max(1, self.num_workers))
        return {**out, "dropped": summary["dropped"], "padded": summary["padded"]}

    def state_dict(self) -> dict[str, Any]:
        """The position to checkpoint: epoch, seed, layout and each worker's (read, yielded)."""
        return {"epoch": self.epoch, "seed": self.stream.seed, "rank": self.stream.rank,
                "world_size": self.stream.world_size, "num_workers": self.num_workers,
                "epoch_size": self.stream.epoch_size, "positions": [list(p) for p in self.positions]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue right after the last consumed batch of ``state`` (same seed, workers, world size)."""
        mine = self.state_dict()
        for k in ("seed", "world_size", "num_workers", "epoch_size", "rank"):
            if state[k] != mine[k]:
                raise ValueError(f"cannot resume: the checkpoint's loader has {k}={state[k]} but this "
                                 f"one has {k}={mine[k]}; resume with the same setting.")
        self.epoch = state["epoch"]
        self.positions = [tuple(p) for p in state["positions"]]
        self.worker_stats = [{} for _ in self.positions]
