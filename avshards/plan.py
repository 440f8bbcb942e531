"""The plan of an epoch: which samples each (rank, worker) reads, and in which order. Pure functions.

See docs/streaming.md for the reasons; in short:

- **Positions.** All passes over the data form one endless sequence: pass ``p`` is every shard
  in the order :func:`shard_order` ``(seed, p)``. Epoch ``e`` is elements ``[e*N, (e+1)*N)`` of it,
  ``N`` being ``epoch_size`` or the number of samples; "position ``i``" is the epoch-relative
  index in ``[0, N)``. :func:`locate` turns positions into (shard, sample, pass).
- **Order.** With a shuffle buffer the epoch is cut into chunks of ``chunk`` consecutive
  positions (one byte-range request each) and the chunks are permuted by ``(seed, epoch)``
  (:func:`epoch_order`); without one the positions stay in order.
- **Parts.** The positions still to read, in that order, are cut into ``world_size * num_workers``
  contiguous parts of equal length (:func:`part_positions`): every part holds chunks from all over
  the epoch. The remainder is dropped, or with ``pad`` the parts wrap around.
- **Emission.** A part is read in blocks of ``shuffle_buffer`` positions, each block emitted in a
  seeded order (seed, epoch, generation, rank, worker, block, round) that deals the members of a
  chunk far apart (:func:`emission_order`, :func:`spread`); round ``r > 0`` reads the part again to
  replace items that were skipped or lost.
- **Consumption.** A reader's position is (read, yielded): the first ``read`` entries it emitted
  are consumed. An epoch read under several layouts (an elastic resume: other world size, workers or
  buffer) is a list of *generations*; :func:`consumed_mask` replays them, and the next layout
  reads exactly the positions none of them consumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SEQUENTIAL_BLOCK = 16     # read granularity (samples) of a part read in order
_ORDER_SALT = 0x5EED      # keeps the chunk permutation's stream apart from the shard order's


@dataclass(frozen=True)
class Layout:
    """How an epoch is split and ordered: readers (ranks x workers), shuffle buffer, chunk, padding."""

    world_size: int = 1
    num_workers: int = 1
    shuffle_buffer: int = 0
    chunk: int = 1
    pad: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_workers", max(1, self.num_workers))
        object.__setattr__(self, "chunk", max(1, min(self.chunk, max(1, self.shuffle_buffer))))

    @property
    def parts(self) -> int:
        return self.world_size * self.num_workers

    @property
    def shuffled(self) -> bool:
        return self.shuffle_buffer > 1

    @property
    def block(self) -> int:
        """Positions read (and shuffled) together."""
        return self.shuffle_buffer if self.shuffled else SEQUENTIAL_BLOCK

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "num_workers": self.num_workers,
                "shuffle_buffer": self.shuffle_buffer, "chunk": self.chunk, "pad": self.pad}


@dataclass(frozen=True)
class Generation:
    """One layout an epoch was (partly) read under, with every reader's (read, yielded) in it."""

    layout: Layout
    positions: tuple[tuple[int, int], ...]    # index: rank * num_workers + worker


def shard_order(num_shards: int, seed: int, pass_index: int, shuffle: bool = True) -> list[int]:
    """The shard order of one pass over the data: a permutation seeded by (seed, pass)."""
    if not shuffle:
        return list(range(num_shards))
    return np.random.default_rng([seed, pass_index]).permutation(num_shards).tolist()


def part_length(num_samples: int, parts: int, pad: bool = False) -> int:
    """Samples per part when ``num_samples`` are cut into ``parts`` equal parts."""
    return -(-num_samples // parts) if pad else num_samples // parts


def epoch_order(size: int, seed: int, epoch: int, layout: Layout) -> np.ndarray:
    """The epoch's positions in reading order: chunks of ``layout.chunk`` permuted by (seed, epoch)."""
    if not layout.shuffled:
        return np.arange(size, dtype=np.int64)
    c = layout.chunk
    chunks = np.random.default_rng([seed, epoch, _ORDER_SALT]).permutation(-(-size // c))
    positions = (chunks[:, None] * c + np.arange(c)).ravel()
    return positions[positions < size]


def part_positions(remaining: np.ndarray, reader: int, layout: Layout) -> np.ndarray:
    """Reader ``reader``'s part (positions in reading order) of ``remaining``, cut into equal parts."""
    n = len(remaining)
    length = part_length(n, layout.parts, layout.pad)
    if length == 0:
        return remaining[:0]
    return remaining[(reader * length + np.arange(length)) % n]


def emission_order(length: int, layout: Layout, seed: int, epoch: int, generation: int, rank: int,
                   worker: int, rnd: int) -> np.ndarray:
    """Indices into a part of ``length`` positions in the order round ``rnd`` emits them: each
    block of ``shuffle_buffer`` positions is :func:`spread` by its own seed."""
    order = np.arange(length)
    if not layout.shuffled:
        return order
    b = layout.block
    for i, lo in enumerate(range(0, length, b)):
        n = min(length, lo + b) - lo
        rng = np.random.default_rng([seed, epoch, generation, rank, worker, i, rnd])
        order[lo:lo + n] = lo + spread(n, layout.chunk, rng)
    return order


def spread(n: int, chunk: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(n)`` that keeps the members of a chunk far apart.

    The entries, in groups of ``chunk`` consecutive ones (a chunk read with one request), are put
    in a random group order and emitted in ``chunk`` sweeps: first member of every group, then the
    second, ... So two clips of one chunk (often of one source) are ``n / chunk`` places apart, and
    a batch of at most that many never holds two of them; each batch draws from that many chunks.
    """
    groups = -(-n // chunk)
    grid = np.arange(groups * chunk).reshape(groups, chunk)[rng.permutation(groups)]
    flat = grid.T.ravel()
    return flat[flat < n]


def remaining_positions(size: int, seed: int, epoch: int, layout: Layout,
                        consumed: np.ndarray | None = None) -> np.ndarray:
    """The positions not yet consumed, in ``layout``'s reading order."""
    order = epoch_order(size, seed, epoch, layout)
    return order if consumed is None else order[~consumed[order]]


def consumed_mask(size: int, seed: int, epoch: int, generations: Sequence[Generation]) -> np.ndarray:
    """Which of the epoch's ``size`` positions the readers of ``generations`` (in order) consumed."""
    consumed = np.zeros(size, dtype=bool)
    for g, gen in enumerate(generations):
        remaining = remaining_positions(size, seed, epoch, gen.layout, consumed)
        for reader, (read, _) in enumerate(gen.positions):
            part = part_positions(remaining, reader, gen.layout)
            rank, worker = divmod(reader, gen.layout.num_workers)
            first = emission_order(len(part), gen.layout, seed, epoch, g, rank, worker, 0)[:min(read, len(part))]
            consumed[part[first]] = True
    return consumed


def locate(counts: Sequence[int], seed: int, shuffle_shards: bool, epoch: int, size: int,
           positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shard, sample in the shard, pass over the data) of each epoch position."""
    counts_arr = np.asarray(counts, dtype=np.int64)
    total = int(counts_arr.sum())
    where = epoch * size + np.asarray(positions, dtype=np.int64)
    passes, offsets = where // total, where % total
    shard, sample = np.empty_like(offsets), np.empty_like(offsets)
    for p in np.unique(passes).tolist():
        sel = passes == p
        order = np.asarray(shard_order(len(counts), seed, p, shuffle_shards), dtype=np.int64)
        ends = np.cumsum(counts_arr[order])
        i = np.searchsorted(ends, offsets[sel], side="right")
        shard[sel] = order[i]
        sample[sel] = offsets[sel] - (ends[i] - counts_arr[order[i]])
    return shard, sample, passes


def segments(shard: np.ndarray, sample: np.ndarray, passes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive samples of one shard and pass, in order: (shard, start, stop, pass)."""
    if len(shard) == 0:
        return []
    breaks = np.flatnonzero((np.diff(shard) != 0) | (np.diff(sample) != 1) | (np.diff(passes) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(shard)]])
    return [(int(shard[a]), int(sample[a]), int(sample[b - 1]) + 1, int(passes[a])) for a, b in zip(starts, stops)]


def check_split(size: int, layout: Layout) -> None:
    """Raise one sentence when an epoch of ``size`` samples gives ``layout``'s readers nothing."""
    if size == 0 or part_length(size, layout.parts, layout.pad) == 0:
        raise ValueError(f"{size} samples cannot be split over {layout.world_size} rank(s) x "
                         f"{layout.num_workers} worker(s); use fewer workers/ranks, more data, or pad=True.")


def partition_passes(counts: Sequence[int], rank: int, world_size: int, worker: int, num_workers: int,
                     seed: int, epoch: int, epoch_size: int | None = None, shuffle: bool = True,
                     pad: bool = False, shuffle_buffer: int = 0, chunk: int = 1) -> list[tuple[int, int, int, int]]:
    """The samples (rank, worker) reads in ``epoch``: (shard, start, stop, pass) runs in part order
    (before the per-block shuffle). Every reader gets the same number of samples."""
    layout = Layout(world_size, num_workers, shuffle_buffer, chunk, pad)
    size = epoch_size or sum(counts)
    check_split(size, layout)
    part = part_positions(remaining_positions(size, seed, epoch, layout), rank * layout.num_workers + worker, layout)
    return segments(*locate(counts, seed, shuffle, epoch, size, part))


def partition(counts: Sequence[int], rank: int, world_size: int, worker: int, num_workers: int,
              seed: int, epoch: int, epoch_size: int | None = None, shuffle: bool = True,
              pad: bool = False, shuffle_buffer: int = 0, chunk: int = 1) -> list[tuple[int, int, int]]:
    """:func:`partition_passes` without the pass index: (shard, start, stop) runs.

    ``counts[i]`` is the sample count of shard i; ``shuffle`` permutes the shard order every pass.
    """
    return [seg[:3] for seg in partition_passes(counts, rank, world_size, worker, num_workers, seed, epoch,
                                                epoch_size, shuffle, pad, shuffle_buffer, chunk)]


def epoch_summary(total: int, world_size: int, num_workers: int, epoch_size: int | None = None,
                  pad: bool = False) -> dict[str, int]:
    """Per-epoch accounting: samples per part, per rank, and how many were dropped or padded."""
    size = epoch_size or total
    parts = world_size * max(1, num_workers)
    length = part_length(size, parts, pad)
    return {"epoch_size": size, "per_worker": length, "per_rank": length * max(1, num_workers),
            "dropped": max(0, size - length * parts), "padded": max(0, length * parts - size)}
