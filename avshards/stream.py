"""Streaming shards for training: mixed, equal splits over ranks and workers; exact and elastic resume.

The model (details and reasons in docs/streaming.md; the pure plan in :mod:`avshards.plan`):

- Epoch ``e`` is ``N`` positions of the endless, seeded sequence of passes over the shards
  (``N``: ``epoch_size``, or the number of samples). Its positions are cut into chunks of
  ``chunk`` consecutive samples (one byte-range request each) and the chunks are permuted; the
  result is cut into ``world_size * num_workers`` equal parts, so every reader draws its chunks
  from all over the data and every rank yields the same number of samples (no DDP hang).
- A reader keeps ``shuffle_buffer`` positions (many chunks, from many shards) in memory and emits
  them in a seeded permutation: clips of one shard or one long source do not cluster in a batch,
  and the order is a pure function of (seed, epoch, rank, worker), which makes resume exact.
- ``skip(entry)`` (on the shard index: key, member sizes) drops samples before their bytes are
  read; ``map_fn(clip)`` runs in the worker and drops items it maps to None. Skipped and lost
  items are counted, and the reader reads its part again (a second round) until it has yielded
  its share; those extra items are counted as ``substituted``.
- A broken response is resumed at the byte where it stopped; a shard that stays unreadable after
  retries is counted as lost, and past ``max_lost`` the stream stops with :class:`LostClipsError`.
- :class:`StreamLoader` (a DataLoader wrapper whose workers live across epochs) records what the
  training loop consumed. Its ``state_dict()`` resumes exactly on the same layout, and on another
  world size or worker count resumes the epoch with the positions not yet consumed
  (:func:`merge_states` joins every rank's state for that).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.utils.data as tud

from avshards import remote
from avshards.format import WAV_HEADER_BYTES, AVClip, SchemaError
from avshards.index import IndexedSample
from avshards.plan import (Generation, Layout, check_split, consumed_mask, emission_order, epoch_summary,
                           locate, part_length, part_positions, partition, partition_passes,
                           remaining_positions, segments, shard_order)
from avshards.reader import CompactIndex, ShardInfo, list_shards, load_index, read_samples, scan_index

__all__ = ["ShardStream", "StreamLoader", "LostClipsError", "Lacks", "merge_states", "partition",
           "partition_passes", "epoch_summary", "shard_order", "part_length", "dist_info", "worker_info"]

log = logging.getLogger("avshards.stream")

DEFAULT_SHUFFLE_BUFFER = 256   # positions held and shuffled together per reader
DEFAULT_CHUNK = 4              # consecutive samples per byte-range request when shuffling
DEFAULT_MAX_LOST = 0.01        # share of an epoch that may be lost to unreadable shards
STATE_FORMAT = 2
COUNTS = ("skipped", "lost", "substituted", "requests", "resumed")
_SEQUENCE_KEYS = ("seed", "epoch_size", "num_samples", "shuffle_shards")   # define what a position is
_LOST, _SKIPPED = object(), object()


class LostClipsError(remote.ShardAccessError):
    """More of an epoch could not be read than ``max_lost`` allows (the message names the shards)."""


@dataclass(frozen=True)
class Lacks:
    """A ``skip`` predicate: true for samples without any of ``members``, or with nothing but a
    header in them (``Lacks("mjpeg", "wav")``: clips without frames or without audio). Decided
    from the shard index alone, before the sample's bytes are read."""

    members: tuple[str, ...]

    def __init__(self, *members: str):
        object.__setattr__(self, "members", members)

    def __call__(self, entry: IndexedSample) -> bool:
        header = {"wav": WAV_HEADER_BYTES}
        return any(entry.members.get(ext, (0, 0))[1] <= header.get(ext, 0) for ext in self.members)


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


def lost_limit(max_lost: float | int | None, share: int) -> float:
    """Clips that may be lost out of ``share``: a float is a fraction of it, an int a count, None no limit."""
    if max_lost is None:
        return math.inf
    return max_lost * share if isinstance(max_lost, float) else max_lost


def _check_max_lost(max_lost: float | int | None) -> None:
    if isinstance(max_lost, float) and not 0.0 <= max_lost <= 1.0:
        raise ValueError(f"max_lost={max_lost} must be a fraction in [0, 1] (a float) or a count (an int).")


def lost_message(lost: int, share: int, where: str, max_lost: float | int, failed: Sequence[str],
                 retries: int) -> str:
    """The one sentence of :class:`LostClipsError`."""
    names = sorted(url.rsplit("/", 1)[-1] for url in failed)
    names = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"{lost} of the {share} clips of this epoch on {where} could not be read, more than "
            f"max_lost={max_lost} allows: {names or 'some shards'} stayed unreadable after {retries} retries; "
            "check that they are intact and reachable (avshards verify), rebuild or re-upload them, or "
            "raise max_lost (--max-lost) to go on without them.")


# --------------------------------------------------------------------------------- one part
@dataclass
class _Part:
    """What one reader reads in one epoch: its positions in part order and where they are."""

    epoch: int
    generation: int
    rank: int
    worker: int
    layout: Layout
    seed: int
    positions: np.ndarray
    shard: np.ndarray
    sample: np.ndarray
    passes: np.ndarray
    remaining: int                         # positions the whole layout splits (the epoch, or its rest)
    run_stop: np.ndarray = field(init=False)
    _emission: dict[int, np.ndarray] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.run_stop = np.empty(len(self.positions), dtype=np.int64)   # how far one request may go
        i = 0
        for _, first, stop, _ in segments(self.shard, self.sample, self.passes):
            self.run_stop[i:i + stop - first] = stop
            i += stop - first

    @property
    def length(self) -> int:
        return len(self.positions)

    @property
    def dropped(self) -> int:
        return max(0, self.remaining - self.length * self.layout.parts)

    @property
    def padded(self) -> int:
        return max(0, self.length * self.layout.parts - self.remaining)

    def emission(self, rnd: int) -> np.ndarray:
        if rnd not in self._emission:
            self._emission = {rnd: emission_order(self.length, self.layout, self.seed, self.epoch,
                                                  self.generation, self.rank, self.worker, rnd)}
        return self._emission[rnd]


class _PartReader:
    """Reads one part block by block and emits it; counts what was skipped, lost or substituted."""

    def __init__(self, stream: ShardStream, part: _Part):
        self.s, self.part = stream, part
        self.indexes: dict[str, CompactIndex] = {}
        self.failed: set[str] = set()
        self.cursor: list | None = None          # [url, next sample, stop, samples iterator]
        self.counts = dict.fromkeys(COUNTS, 0)
        self.lost_seen = 0                      # lost positions found so far, emitted or not

    def run(self, read: int, yielded: int) -> Iterator[tuple[Any, dict[str, Any]]]:
        p, length = self.part, self.part.length
        since = 0   # reads since the last yield: a whole part without one means nothing is usable
        try:
            while yielded < length and since < length:
                rnd, i = divmod(read, length)
                order = p.emission(rnd)
                hi = min(length, (i // p.layout.block + 1) * p.layout.block)
                items = self.read_entries(order[i:hi])
                lost = sum(items[int(k)] is _LOST for k in order[i:hi]) if rnd == 0 else 0
                if lost:   # say so now: a dead server must not cost a whole part of timeouts to notice
                    self.lost_seen += lost
                    yield None, {**self.state(read, yielded, done=False), "progress": True}
                for j in range(i, hi):
                    item = items.pop(int(order[j]))
                    read, since = read + 1, since + 1
                    if item is not _LOST and item is not _SKIPPED and self.s.map_fn is not None:
                        item = _SKIPPED if (mapped := self.s.map_fn(item)) is None else mapped
                    if item is _LOST or item is _SKIPPED:
                        if rnd == 0:
                            self.counts["lost" if item is _LOST else "skipped"] += 1
                        continue
                    yielded, since = yielded + 1, 0
                    self.counts["substituted"] += rnd > 0
                    yield item, self.state(read, yielded, done=False)
                    if yielded == length:
                        break
        finally:
            self.close_cursor()
        if yielded < length:
            log.warning("worker %d of rank %d read a whole round of its part without a usable sample; it "
                        "stops at %d of %d items (%s); ranks may now be uneven", p.worker, p.rank, yielded,
                        length, self.counts)
        yield None, self.state(read, yielded, done=True)

    def state(self, read: int, yielded: int, done: bool) -> dict[str, Any]:
        p = self.part
        return {"epoch": p.epoch, "worker": p.worker, "read": read, "yielded": yielded, "done": done,
                "counts": dict(self.counts), "lost_seen": self.lost_seen, "failed": sorted(self.failed),
                "length": p.length, "dropped": p.dropped, "padded": p.padded}

    # reading -----------------------------------------------------------------------------------
    def read_entries(self, entries: np.ndarray) -> dict[int, Any]:
        """Clips (or _SKIPPED / _LOST) for these part indices, read in runs of consecutive samples.
        ``map_fn`` runs later, as each clip is emitted: the expensive work follows the consumer."""
        p, out = self.part, {}
        wanted = np.sort(entries)
        for run in np.split(wanted, _run_breaks(wanted, p)) if len(wanted) else []:
            first = int(run[0])
            url, visit = self.s.shards[int(p.shard[first])].url, int(p.passes[first])
            out.update({} if url in self.failed else self.read_run(url, run, visit))
            for k in run.tolist():
                out.setdefault(k, _LOST)
        return out

    def read_run(self, url: str, run: np.ndarray, visit: int) -> dict[int, Any]:
        """Clips (or _SKIPPED) of one run; on a read error (or an undecodable sample) the shard is
        given up for the epoch."""
        raws: dict[int, Any] = {}
        try:
            index = self.index(url)
            for k in run.tolist():
                n = int(self.part.sample[k])
                if self.s.skip is not None and n < len(index) and self.s.skip(index[n]):
                    raws[k] = _SKIPPED
                else:
                    raw = self.sample(url, index, n, int(self.part.run_stop[k]))
                    raws[k] = AVClip.from_sample(raw, epoch=self.part.epoch, visit=visit)
        except SchemaError:
            raise
        except Exception as err:  # transient after retries, truncation, object gone: skip the shard
            self.failed.add(url)
            self.close_cursor()
            log.warning("skipping the rest of %s after %d of its samples in this part: %s", url, len(raws), err)
        return raws

    def index(self, url: str) -> CompactIndex:
        if url not in self.indexes:
            s = self.s
            self.indexes[url] = CompactIndex(load_index(url, s.retries, s.backoff) or scan_index(url))
        return self.indexes[url]

    def sample(self, url: str, index: CompactIndex, n: int, run_stop: int) -> dict[str, Any]:
        """Sample ``n``, from the open request when it is there, else from a new one that runs to
        the end of its run in the part (or the next skipped sample)."""
        # the open request serves n only before its stop (the next pass may go on at that sample)
        if self.cursor is None or self.cursor[:2] != [url, n] or n >= self.cursor[2]:
            self.close_cursor()
            stop = self.request_stop(index, n, run_stop)
            it = read_samples(url, n, stop, index, self.s.retries, self.s.backoff, self.counts)
            self.cursor = [url, n, stop, it]
        raw = next(self.cursor[3], None)
        if raw is None:
            raise EOFError(f"{url} ended after {n} samples, fewer than its count says")
        self.cursor[1] = n + 1
        return raw

    def request_stop(self, index: CompactIndex, n: int, run_stop: int) -> int:
        stop = min(run_stop, len(index)) if n < len(index) else n + 1
        if self.s.skip is not None:
            for m in range(n + 1, stop):
                if self.s.skip(index[m]):
                    return m
        return stop

    def close_cursor(self) -> None:
        if self.cursor is not None:
            self.cursor[3].close()   # closes the request behind it
            self.cursor = None


def _run_breaks(wanted: np.ndarray, part: _Part) -> np.ndarray:
    """Where sorted part indices stop being consecutive samples of one shard and pass."""
    shard, sample, passes = part.shard[wanted], part.sample[wanted], part.passes[wanted]
    return np.flatnonzero((np.diff(shard) != 0) | (np.diff(sample) != 1) | (np.diff(passes) != 0)) + 1


# --------------------------------------------------------------------------------- the dataset
class ShardStream(tud.IterableDataset):
    """Clips (or ``map_fn(clip)``) of the shards at ``url``, mixed and split over ranks and workers.

    Args:
        url: folder, brace pattern, ``http(s)://`` or ``s3://bucket/prefix/``.
        seed: seeds the shard order of each pass, the chunk order and the buffer shuffles.
        shuffle_buffer: positions each reader holds and emits in a seeded permutation (0: read in
            order, one long request per shard segment).
        epoch_size: samples per epoch over all ranks (Table S10's "epoch size"; the sequence goes
            on across passes); None: one true pass per epoch.
        map_fn: picklable function applied in the worker; None results are skipped and counted.
            It may use ``clip.epoch`` and ``clip.visit`` (where the stream read the clip).
        rank, world_size: default from torch.distributed, else RANK / WORLD_SIZE, else 0 / 1.
        pad: complete the last parts by wrapping around instead of dropping the remainder.
        shuffle_shards: permute the shard order every pass.
        retries, backoff: retry transient read errors (without progress), sleeping backoff * 2**i.
        shards: the shard list, when already known (skips the listing and the start-up check).
        chunk: consecutive samples per byte-range request when shuffling (the unit of mixing).
        skip: picklable predicate on a sample's index entry (key, member sizes): true drops the
            sample before its bytes are read, counted as skipped (e.g. ``Lacks("wav")``).
        max_lost: how much of its share a reader may lose to unreadable shards before
            :class:`LostClipsError` stops it: a float is a fraction, an int a count, None no limit.

    The first shard is checked at construction, so a wrong URL, missing object, bad credentials, a
    server that ignores HTTP Range requests or an unknown schema fail here with one clear sentence
    (:class:`avshards.remote.ShardAccessError` or :class:`avshards.format.SchemaError`).
    Iterate through :class:`StreamLoader` (exact and elastic resume, workers kept across epochs),
    or through any DataLoader: ``state_dict()`` / ``load_state_dict()`` give each worker's
    position, which torchdata's ``StatefulDataLoader`` checkpoints.
    """

    def __init__(self, url: str, seed: int = 0, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 epoch_size: int | None = None, map_fn: Callable[[AVClip], Any] | None = None,
                 rank: int | None = None, world_size: int | None = None, pad: bool = False,
                 shuffle_shards: bool = True, retries: int = remote.RETRIES, backoff: float = remote.BACKOFF,
                 shards: list[ShardInfo] | None = None, *, chunk: int = DEFAULT_CHUNK,
                 skip: Callable[[IndexedSample], bool] | None = None,
                 max_lost: float | int | None = DEFAULT_MAX_LOST):
        super().__init__()
        _check_max_lost(max_lost)
        self.url, self.seed, self.shuffle_buffer, self.epoch_size = url, seed, shuffle_buffer, epoch_size
        self.map_fn, self.skip, self.chunk, self.max_lost = map_fn, skip, chunk, max_lost
        self.pad, self.shuffle_shards = pad, shuffle_shards
        self.retries, self.backoff = retries, backoff
        self.rank, self.world_size = dist_info(rank, world_size)
        self.epoch = 0
        self._resume: dict[str, Any] | None = None    # a loaded worker state (see load_state_dict)
        self._state: dict[str, Any] | None = None     # this worker's position in the current iteration
        self.shards = shards if shards is not None else self._start_up()

    # start-up ----------------------------------------------------------------------------------
    def _start_up(self) -> list[ShardInfo]:
        """List the shards and read the first sample, turning every failure into one sentence."""
        first = None
        try:
            shards = list_shards(self.url, self.retries, self.backoff)
            first = next((s for s in shards if s.num_samples), None)
            if first is None:
                raise remote.ShardAccessError(f"{self.url} holds no samples; check the shards.")
            index = load_index(first.url, self.retries, self.backoff)   # ranged read: a Range-blind server fails
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

    @property
    def size(self) -> int:
        """Positions per epoch."""
        return self.epoch_size or sum(self.counts)

    def layout(self, num_workers: int = 1) -> Layout:
        """How this stream splits an epoch over its ranks and ``num_workers`` workers."""
        return Layout(self.world_size, num_workers, self.shuffle_buffer, self.chunk, self.pad)

    def summary(self, num_workers: int = 1) -> dict[str, int]:
        """Per-epoch accounting for ``num_workers`` DataLoader workers (see :func:`epoch_summary`)."""
        return epoch_summary(sum(self.counts), self.world_size, num_workers, self.epoch_size, self.pad)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (shard order, shuffles and, with epoch_size, where in the data it starts)."""
        self.epoch = epoch

    def sequence(self) -> dict[str, Any]:
        """The settings that define what an epoch position is (a resumed state must agree)."""
        return {"seed": self.seed, "epoch_size": self.epoch_size, "num_samples": sum(self.counts),
                "shuffle_shards": self.shuffle_shards}

    def part(self, epoch: int, layout: Layout, earlier: Sequence[Generation] = (), worker: int = 0) -> _Part:
        """What (this rank, ``worker``) reads of ``epoch`` under ``layout``, after the ``earlier``
        generations of that epoch consumed their share."""
        size = self.size
        if not earlier:
            check_split(size, layout)
        consumed = consumed_mask(size, self.seed, epoch, earlier) if earlier else None
        remaining = remaining_positions(size, self.seed, epoch, layout, consumed)
        positions = part_positions(remaining, self.rank * layout.num_workers + worker, layout)
        shard, sample, passes = locate(self.counts, self.seed, self.shuffle_shards, epoch, size, positions)
        return _Part(epoch, len(earlier), self.rank, worker, layout, self.seed, positions, shard, sample,
                     passes, len(remaining))

    # iteration ---------------------------------------------------------------------------------
    def iter_worker(self, worker: int, num_workers: int, epoch: int | None = None,
                    earlier: Sequence[Generation] = (), start: tuple[int, int] = (0, 0)
                    ) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Yield (item, state) for one worker's part of ``epoch`` (default: the current one),
        from position ``start`` = (read, yielded). The last pair is (None, final state) with
        ``state["done"]`` true: it carries the counts of what was skipped or lost after the last item.
        Pairs (None, state) with ``state["progress"]`` true report lost samples found ahead of the
        position (``state["lost_seen"]``), so a reader that finds nothing readable is stopped early."""
        part = self.part(self.epoch if epoch is None else epoch, self.layout(num_workers), earlier, worker)
        yield from _PartReader(self, part).run(*start)

    def __iter__(self) -> Iterator[Any]:
        worker, num_workers = worker_info()
        resume = self._resume if self._resume and self._resume["epoch"] == self.epoch else None
        earlier = [_generation(g) for g in resume["earlier"]] if resume else []
        start = tuple(resume["position"]) if resume else (0, 0)
        base = resume["counts"] if resume else {}
        share = part_length(self.size, self.layout(num_workers).parts, self.pad)
        for item, state in self.iter_worker(worker, num_workers, self.epoch, earlier, start):
            lost = base.get("lost", 0) + state["lost_seen"]
            if lost > lost_limit(self.max_lost, share):
                raise LostClipsError(lost_message(lost, share, f"worker {worker} of rank {self.rank}",
                                                  self.max_lost, state["failed"], self.retries))
            if state.get("progress"):
                continue
            state["counts"] = _add_counts(base, state["counts"])
            self._state = {**state, "earlier": resume["earlier"] if resume else []}
            if state["done"]:
                break
            yield item
        self._resume = None

    def state_dict(self) -> dict[str, Any]:
        """This worker's position (what it has yielded so far in the current epoch); with
        :meth:`load_state_dict`, what torchdata's ``StatefulDataLoader`` checkpoints per worker."""
        worker, num_workers = worker_info()
        s = self._state if self._state and self._state["epoch"] == self.epoch else None
        if s is None and self._resume is not None and self._resume["epoch"] == self.epoch:
            return dict(self._resume)
        return {"format": STATE_FORMAT, "epoch": self.epoch, **self.sequence(), "rank": self.rank,
                "layout": self.layout(num_workers).to_dict(), "worker": worker,
                "position": [s["read"], s["yielded"]] if s else [0, 0],
                "counts": s["counts"] if s else dict.fromkeys(COUNTS, 0), "earlier": s["earlier"] if s else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue this worker from ``state`` (a :meth:`state_dict` of the same worker and layout)."""
        _check_sequence(state, self.sequence())
        layout = self.layout(worker_info()[1])
        if state.get("layout") != layout.to_dict():
            raise ValueError(f"cannot resume: the checkpoint's stream has layout {state.get('layout')} but this "
                             f"one has {layout.to_dict()}; resume with the same setting.")
        self.epoch, self._resume, self._state = state["epoch"], dict(state), None


def _generation(record: dict[str, Any]) -> Generation:
    return Generation(Layout(**record["layout"]), tuple(tuple(p) for p in record["positions"]))


def _add_counts(*many: dict[str, int]) -> dict[str, int]:
    return {k: sum(c.get(k, 0) for c in many) for k in COUNTS}


def _check_sequence(state: dict[str, Any], mine: dict[str, Any]) -> None:
    for k in _SEQUENCE_KEYS:
        if k in state and state[k] != mine[k]:
            raise ValueError(f"cannot resume: the checkpoint's loader has {k}={state[k]} but this "
                             f"one has {k}={mine[k]}; resume with the same setting.")


# ------------------------------------------------------------------------------- the loader
class _Batches(tud.IterableDataset):
    """Worker side of :class:`StreamLoader`: whole batches, each with the worker's position after
    it, epoch after epoch (the workers live as long as the loader's iterator)."""

    def __init__(self, stream: ShardStream, batch_size: int, collate_fn: Callable[[list], Any], epoch: int,
                 earlier: Sequence[Generation], positions: Sequence[tuple[int, int]]):
        super().__init__()
        self.stream, self.batch_size, self.collate_fn = stream, batch_size, collate_fn
        self.epoch, self.earlier, self.positions = epoch, list(earlier), list(positions)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Any]]:
        worker, num_workers = worker_info()
        epoch, earlier, start = self.epoch, self.earlier, self.positions[worker]
        while True:
            items, last = [], None
            for item, state in self.stream.iter_worker(worker, num_workers, epoch, earlier, start):
                if state.get("progress"):
                    yield state, None        # lost samples found ahead: counts only, no position
                    continue
                if state["done"]:
                    if items:
                        yield last, self.collate_fn(items)
                    yield state, None        # the final counts, no batch
                    break
                items.append(item)
                last = state
                if len(items) == self.batch_size:
                    yield state, self.collate_fn(items)
                    items = []
            epoch, earlier, start = epoch + 1, [], (0, 0)


def _as_list(items: list) -> list:
    return items


class StreamLoader:
    """A DataLoader over a :class:`ShardStream` with an exact, checkpointable, elastic position.

    Each batch comes from one worker and carries that worker's position after it; the loader
    keeps the position of the last batch it handed out per worker, so ``state_dict()`` describes
    exactly what the training loop consumed, whatever was prefetched. The workers start once and
    go on from epoch to epoch (an epoch that runs to its end advances ``epoch`` by one); they
    restart only after :meth:`load_state_dict` or a :meth:`set_epoch` jump.

    ``load_state_dict`` takes this loader's own state, every rank's states (a list), or
    :func:`merge_states` of them: on the same world size, workers and buffer it continues exactly;
    on another layout the interrupted epoch goes on with the positions no rank had consumed yet.
    The batch size may change.

    Args:
        stream: the dataset.
        batch_size: items per batch (the last batch of each worker may be smaller).
        num_workers: DataLoader worker processes (0: read in this process).
        collate_fn: turns a list of items into a batch (default: keep the list).
        max_lost: share (float) or count (int) of this rank's clips of an epoch that may be lost to
            unreadable shards before :class:`LostClipsError`; default: the stream's ``max_lost``.
        **loader_kw: passed to torch's DataLoader (pin_memory, prefetch_factor, ...).
    """

    def __init__(self, stream: ShardStream, batch_size: int, num_workers: int = 0,
                 collate_fn: Callable[[list], Any] = _as_list, max_lost: float | int | None | str = "stream",
                 **loader_kw: Any):
        self.stream, self.batch_size, self.num_workers = stream, batch_size, num_workers
        self.collate_fn, self.loader_kw = collate_fn, loader_kw
        self.max_lost = stream.max_lost if max_lost == "stream" else max_lost
        _check_max_lost(self.max_lost)
        self.layout = stream.layout(num_workers)
        check_split(stream.size, self.layout)
        self.readers = self.layout.num_workers
        self.epoch = 0
        self.last_epoch_stats: dict[str, int] = {}   # .stats of the last epoch that ran to its end
        self._live: Iterator | None = None
        self._new_epoch()
        if self.layout.shuffled and self.layout.shuffle_buffer < self.layout.chunk * batch_size:
            log.warning("avshards: a batch of %d mixes at most shuffle_buffer / chunk = %d chunks of the epoch; "
                        "use shuffle_buffer >= %d for batches as mixed as an i.i.d. shuffle (docs/streaming.md)",
                        batch_size, self.layout.shuffle_buffer // self.layout.chunk, self.layout.chunk * batch_size)
        summary = self.summary
        if summary["dropped"] or summary["padded"]:
            log.info("avshards: %d samples per epoch over %d rank(s) x %d worker(s): %d dropped, %d padded",
                     summary["epoch_size"], stream.world_size, self.readers, summary["dropped"], summary["padded"])

    @property
    def summary(self) -> dict[str, int]:
        return self.stream.summary(self.readers)

    def _new_epoch(self, earlier: Sequence[dict] = (), positions=None, counts=None) -> None:
        """Forget the epoch's progress (or set it from a loaded state)."""
        self.earlier = list(earlier)                 # state records of the epoch's earlier layouts
        self.positions = [tuple(p) for p in positions] if positions else [(0, 0)] * self.readers
        self.base_counts = [dict(c) for c in counts] if counts else [{} for _ in range(self.readers)]
        self.worker_counts = [dict.fromkeys(COUNTS, 0) for _ in range(self.readers)]
        self.worker_failed = [set(c.get("failed", [])) for c in self.base_counts]
        self.lost_seen = [0] * self.readers
        self.split = {"dropped": self.summary["dropped"], "padded": self.summary["padded"]}
        self._done: set[int] = set()
        self._pending: list[tuple[dict, Any]] = []

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self.readers * math.ceil(self.summary["per_worker"] / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of ``epoch`` (no-op when already in it, so a resumed position is kept)."""
        if epoch != self.epoch:
            self.close()
            self.epoch = epoch
            self._new_epoch()

    def close(self) -> None:
        """Stop the workers (they start again on the next iteration)."""
        self._live = None

    def _start(self) -> Iterator:
        if self._live is None:
            batches = _Batches(self.stream, self.batch_size, self.collate_fn, self.epoch,
                               [_generation(g) for g in self.earlier], self.positions)
            loader = tud.DataLoader(batches, batch_size=None, num_workers=self.num_workers, **self.loader_kw)
            self._live, self._done, self._pending = iter(loader), set(), []
        return self._live

    def _next(self) -> tuple[dict[str, Any], Any]:
        """The next (state, batch) of the current epoch; batches of the next one wait their turn."""
        for i, (state, batch) in enumerate(self._pending):
            if state["epoch"] == self.epoch:
                return self._pending.pop(i)
        while True:
            state, batch = next(self._start())
            if state["epoch"] == self.epoch:
                return state, batch
            self._pending.append((state, batch))

    def __iter__(self) -> Iterator[Any]:
        while len(self._done) < self.readers:
            try:
                state, batch = self._next()
            except Exception:   # a worker failed: its iterator is unusable
                self.close()
                raise
            w = state["worker"]
            self.lost_seen[w] = state["lost_seen"]
            self.worker_failed[w] |= set(state["failed"])
            if state.get("progress"):
                self._check_lost()
                continue
            self.positions[w] = (state["read"], state["yielded"])
            self.worker_counts[w] = state["counts"]
            self.split = {"dropped": state["dropped"], "padded": state["padded"]}
            self._check_lost()
            if state["done"]:
                self._done.add(w)
            if batch is not None:
                yield batch
        self.last_epoch_stats = self.stats
        log.info("avshards epoch %d (rank %d): %s", self.epoch, self.stream.rank, self.last_epoch_stats)
        self.epoch += 1
        pending = self._pending
        self._new_epoch()
        self._pending = pending                  # the live workers are already in the next epoch

    def _check_lost(self) -> None:
        """Stop past max_lost, counting lost samples found ahead of the position too."""
        earlier = self.earlier if self.stream.rank == 0 else []
        lost = sum(b.get("lost", 0) + seen for b, seen in zip(self.base_counts, self.lost_seen))
        lost += sum(g["counts"]["lost"] for g in earlier)
        share = self.summary["per_rank"]
        if lost > lost_limit(self.max_lost, share):
            failed = sorted(set().union(*self.worker_failed, *(g.get("failed", []) for g in self.earlier)))
            self.close()
            raise LostClipsError(lost_message(lost, share, f"rank {self.stream.rank}", self.max_lost, failed,
                                              self.stream.retries))

    @property
    def stats(self) -> dict[str, int]:
        """This rank's counts in the current epoch: yielded; skipped (by ``skip`` or ``map_fn``);
        lost (unreadable); substituted (items read a second time to make up for skipped or lost
        ones); failed_shards; requests (byte-range requests made) and resumed (broken responses
        continued); and the epoch's dropped / padded samples. An epoch resumed on another layout
        counts its earlier layouts' numbers on rank 0."""
        earlier = self.earlier if self.stream.rank == 0 else []
        counts = _add_counts(*self.base_counts, *self.worker_counts, *(g["counts"] for g in earlier))
        failed = set().union(*self.worker_failed, *(g.get("failed", []) for g in earlier))
        yielded = sum(y for _, y in self.positions) + sum(y for g in earlier for _, y in g["positions"])
        return {"yielded": yielded, **counts, "failed_shards": len(failed), **self.split}

    # checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The position to checkpoint: plain JSON, this rank's workers' (read, yielded) and counts
        in the current layout, plus the epoch's earlier layouts (after an elastic resume)."""
        counts = [{**_add_counts(b, c), "failed": sorted(f)}
                  for b, c, f in zip(self.base_counts, self.worker_counts, self.worker_failed)]
        return {"format": STATE_FORMAT, "epoch": self.epoch, **self.stream.sequence(), "rank": self.stream.rank,
                **self.layout.to_dict(), "positions": [list(p) for p in self.positions], "counts": counts,
                "earlier": self.earlier}

    def load_state_dict(self, state: dict[str, Any] | Sequence[dict[str, Any]]) -> None:
        """Continue after the last consumed batch of ``state``: this rank's own state, every rank's
        states (a list, any order), or their :func:`merge_states`. Same layout: exact. Another world
        size, worker count, buffer or chunk: the epoch goes on with the positions not consumed yet."""
        if not isinstance(state, dict):
            state = merge_states(state)
        if "format" not in state:
            return self._load_old_format(state)
        _check_sequence(state, self.stream.sequence())
        saved = Layout(state["world_size"], state["num_workers"], state["shuffle_buffer"], state["chunk"],
                       state["pad"])
        rank, k = self.stream.rank, self.readers
        earlier, positions, counts = list(state["earlier"]), None, None
        if saved == self.layout:
            if state["rank"] is None:                       # merged: take this rank's slice
                positions = state["positions"][rank * k:(rank + 1) * k]
                counts = state["counts"][rank * k:(rank + 1) * k]
            elif state["rank"] == rank:
                positions, counts = state["positions"], state["counts"]
            else:
                raise ValueError(f"cannot resume: this is rank {state['rank']}'s loader state and this loader "
                                 f"is rank {rank}; give each rank its own state, or all ranks' states (a list).")
        else:
            if state["rank"] is not None and state["world_size"] > 1:
                raise ValueError(f"cannot resume on another layout from rank {state['rank']}'s state alone; "
                                 "pass all ranks' loader states (a list, or avshards.stream.merge_states(states)).")
            if any(read for read, _ in state["positions"]):
                earlier.append({"layout": saved.to_dict(), "positions": state["positions"],
                                "counts": _add_counts(*state["counts"]),
                                "failed": sorted({f for c in state["counts"] for f in c.get("failed", [])})})
                log.info("avshards: resuming epoch %d, read by %d rank(s) x %d worker(s), on %d x %d: the "
                         "positions not consumed yet are split anew", state["epoch"], saved.world_size,
                         saved.num_workers, self.layout.world_size, self.layout.num_workers)
        self.close()
        self.epoch = state["epoch"]
        self._new_epoch(earlier, positions, counts)

    def _load_old_format(self, state: dict[str, Any]) -> None:
        """A state of avshards' first format (contiguous parts): its reading order is not this one."""
        _check_sequence({"seed": state["seed"], "epoch_size": state.get("epoch_size")}, self.stream.sequence())
        started = any(tuple(p) != (0, 0) for p in state["positions"])
        self.close()
        self.epoch = state["epoch"] + started
        self._new_epoch()
        if started:
            log.warning("avshards: this loader state was saved by an older avshards whose reading order differs; "
                        "the data continues at the start of epoch %d, and the clips of epoch %d not yet seen are "
                        "skipped this once (docs/streaming.md)", self.epoch, state["epoch"])


def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One state from every rank's :meth:`StreamLoader.state_dict` (in any order), for
    :meth:`StreamLoader.load_state_dict` on any layout. States of the old format merge into an
    old-format state (its epoch, and whether any rank had started it)."""
    states = list(states)
    if not states:
        raise ValueError("cannot resume: no loader states were given.")
    if any("format" not in s for s in states):
        return {"epoch": states[0]["epoch"], "seed": states[0]["seed"], "epoch_size": states[0].get("epoch_size"),
                "positions": [p for s in states for p in s["positions"]]}
    first = states[0]
    same = ("format", "epoch", *_SEQUENCE_KEYS, "world_size", "num_workers", "shuffle_buffer", "chunk", "pad",
            "earlier")
    for s in states[1:]:
        for k in same:
            if s.get(k) != first.get(k):
                raise ValueError(f"cannot merge loader states: rank {first['rank']} has {k}={first.get(k)} but "
                                 f"rank {s['rank']} has {k}={s.get(k)}; use the states of one checkpoint.")
    if first["rank"] is None and len(states) == 1:
        return first
    ranks = sorted(s["rank"] for s in states)
    if ranks != list(range(first["world_size"])):
        raise ValueError(f"cannot merge loader states: got ranks {ranks} of a {first['world_size']}-rank run; "
                         "pass every rank's state.")
    ordered = sorted(states, key=lambda s: s["rank"])
    return {**first, "rank": None, "positions": [p for s in ordered for p in s["positions"]],
            "counts": [c for s in ordered for c in s["counts"]]}
