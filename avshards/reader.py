"""Reading shards by URL: find them, count them, read any sample range of one, in order.

Stages, each a small function (the streaming dataset in :mod:`avshards.stream` composes them):

- :func:`shard_urls`: a folder / prefix (its manifest, else a listing of ``*.tar``), a brace
  pattern, or one ``.tar`` -> shard URLs, for local paths, ``http(s)://`` and ``s3://``.
- :func:`list_shards`: the same with sample counts (manifest, else each shard's ``.idx``, else a scan).
- :func:`load_index` + :func:`read_samples`: samples ``[start, stop)`` of a shard: one byte-range
  request via the index, or sequential tar streaming when the shard has no index.
- :func:`open_shards`: every clip of every shard in order (inspect, verify, preview, tests).
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import braceexpand
import numpy as np

from avshards import remote
from avshards.format import MANIFEST_NAME, AVClip
from avshards.index import IndexedSample, index_path, parse_index, split_name


log = logging.getLogger("avshards.reader")


class TruncatedShardError(OSError):
    """A shard ends before the samples its index or manifest promises."""


@dataclass(frozen=True)
class ShardInfo:
    """One shard: where it is and how many samples it holds."""
    url: str
    num_samples: int


def is_pattern(url: str) -> bool:
    """A brace pattern (``shards-{000000..000009}.tar``) or a single ``.tar``, not a folder/prefix."""
    return "{" in url or url.endswith(".tar")


def read_manifest(folder: str, retries: int = remote.RETRIES, backoff: float = remote.BACKOFF
                  ) -> dict[str, Any] | None:
    """The folder's ``manifest.json`` as a dict, or None when there is none."""
    try:
        return json.loads(remote.read_range(remote.join(folder, MANIFEST_NAME), retries=retries, backoff=backoff))
    except remote.NotFound:
        return None


def _listing(folder: str) -> list[str]:
    urls = [u for u in remote.list_urls(folder) if u.endswith(".tar")]
    if not urls:
        raise remote.NotFound(f"{folder} has no manifest.json and no .tar shards; "
                              "check the path, or build shards with `avshards build`.")
    return urls


def shard_urls(url: str) -> list[str]:
    """The shard URLs of a folder or prefix (manifest order, else sorted ``*.tar``) or a brace pattern.

    An empty or missing local folder gives ``[]``; remote problems raise
    :class:`avshards.remote.ShardAccessError`.
    """
    if is_pattern(url):
        return list(braceexpand.braceexpand(url))
    manifest = read_manifest(url)
    if manifest is not None:
        return [remote.join(url, s["name"]) for s in manifest["shards"]]
    try:
        return _listing(url)
    except remote.NotFound:
        if remote.scheme_of(url) == "file":
            return []
        raise


def load_index(url: str, retries: int = remote.RETRIES, backoff: float = remote.BACKOFF
               ) -> list[IndexedSample] | None:
    """The shard's DALI wds2idx index (``NAME.idx`` beside ``NAME.tar``), or None when it has none."""
    try:
        return parse_index(remote.read_range(index_path(url), retries=retries, backoff=backoff).decode())
    except remote.NotFound:
        return None


def count_samples(url: str, retries: int = remote.RETRIES, backoff: float = remote.BACKOFF) -> int:
    """Samples in a shard: from its index when there is one, else by streaming the tar once."""
    index = load_index(url, retries, backoff)
    if index is not None:
        return len(index)
    log.warning("%s has no manifest entry and no .idx: counting its samples by reading it whole "
                "(`avshards index` writes the index and avoids this)", url)
    return sum(1 for _ in read_samples(url, 0, None))


def list_shards(url: str, retries: int = remote.RETRIES, backoff: float = remote.BACKOFF) -> list[ShardInfo]:
    """The shards at ``url`` with their sample counts (manifest, else indexes, else a scan)."""
    if is_pattern(url):
        urls = shard_urls(url)
        folder = urls[0].rsplit("/", 1)[0] if "/" in urls[0] else "."
        manifest = read_manifest(folder, retries, backoff)
        counts = {remote.join(folder, s["name"]): s["num_samples"] for s in (manifest or {}).get("shards", [])}
        return [ShardInfo(u, counts[u] if u in counts else count_samples(u, retries, backoff)) for u in urls]
    manifest = read_manifest(url, retries, backoff)
    if manifest is None:
        return [ShardInfo(u, count_samples(u, retries, backoff)) for u in _listing(url)]
    return [ShardInfo(remote.join(url, s["name"]), int(s["num_samples"])) for s in manifest["shards"]]


def _indexed_samples(url: str, index: Sequence[IndexedSample], start: int, stop: int, retries: int,
                     backoff: float, counters: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """One ranged request for all of ``index[start:stop]``, read sample by sample as it arrives.

    A connection lost mid-body is resumed at the byte where it stopped
    (:class:`avshards.remote.ResumingStream`), so a flaky server costs time, not samples.
    """
    wanted = index[start:stop]
    if not wanted:
        if stop > len(index):
            raise TruncatedShardError(f"{url} has {len(index)} samples in its index, fewer than expected")
        return
    stream = remote.ResumingStream(url, wanted[0].start, wanted[-1].end, retries, backoff)
    at = wanted[0].start
    try:
        for s in wanted:
            data = stream.read(s.end - at)
            if any(off + size > at + len(data) for off, size in s.members.values()):
                raise TruncatedShardError(f"{url} is truncated at byte {at + len(data)} (sample {s.key!r})")
            sample: dict[str, Any] = {"__key__": s.key, "__url__": url}
            for ext, (off, size) in s.members.items():
                sample[ext] = data[off - at:off - at + size]
            at = s.end
            yield sample
    finally:
        stream.close()
        if counters is not None:
            counters["requests"] = counters.get("requests", 0) + stream.requests
            counters["resumed"] = counters.get("resumed", 0) + stream.resumed
    if stop > len(index):
        raise TruncatedShardError(f"{url} has {len(index)} samples in its index, fewer than expected")


def scan_index(url: str) -> list[IndexedSample]:
    """The index of a shard that has no ``.idx``, from its tar headers (what ``avshards index`` writes).

    A local file is scanned by seeking from header to header; a remote one is streamed once.
    A tar damaged at the end gives the samples before the damage.
    """
    log.warning("%s has no .idx: indexing it by scanning its tar (`avshards index` writes the index once "
                "and avoids this)", url)
    stream = remote.open_stream(url)
    samples: list[IndexedSample] = []
    try:
        mode = "r:" if remote.scheme_of(url) == "file" else "r|"
        with tarfile.open(fileobj=stream, mode=mode) as tar:
            for m in tar:
                key, ext = split_name(m.name)
                if not m.isreg() or not key or key.endswith("/"):
                    continue
                if samples and samples[-1].key == key:
                    samples[-1].members[ext] = (m.offset_data, m.size)
                else:
                    samples.append(IndexedSample(key, {ext: (m.offset_data, m.size)}))
    except (tarfile.ReadError, EOFError):   # damaged or truncated: keep what came before
        pass
    finally:
        stream.close()
    return samples


def _streamed_samples(url: str, start: int, stop: int | None) -> Iterator[dict[str, Any]]:
    from webdataset import tariterators   # imports torch: only for shards without an index

    stream = remote.open_stream(url)
    try:
        files = ({**f, "__url__": url} for f in tariterators.tar_file_iterator(stream))
        for i, sample in enumerate(tariterators.group_by_keys(files)):
            if stop is not None and i >= stop:
                return
            if i >= start:
                yield sample
    except tarfile.ReadError as err:  # the tar ends mid-member or has garbage
        raise TruncatedShardError(f"{url} is damaged or truncated: {err}") from None
    finally:
        stream.close()


def read_samples(url: str, start: int = 0, stop: int | None = None,
                 index: Sequence[IndexedSample] | None = None, retries: int = remote.RETRIES,
                 backoff: float = remote.BACKOFF, counters: dict[str, int] | None = None
                 ) -> Iterator[dict[str, Any]]:
    """Raw sample dicts (``__key__``, ``__url__``, ``json``, ``mjpeg``, ``wav``) ``[start, stop)`` of a shard.

    With the shard's ``index`` (a list, or a :class:`CompactIndex`) this is one byte-range request,
    read as it arrives; without, the tar is streamed from its start. Samples before any damage are
    yielded, then :class:`TruncatedShardError` (or the read error) is raised, so the caller knows
    how many were lost. ``counters["requests"]`` / ``["resumed"]`` (when given) add the requests
    made and the broken responses resumed.
    """
    if index is not None:
        return _indexed_samples(url, index, start, len(index) if stop is None else stop, retries, backoff,
                                counters)
    return _streamed_samples(url, start, stop)


class CompactIndex:
    """A shard's index held as arrays: a few dozen bytes a sample (a list of :class:`IndexedSample`
    costs ~1 kB a sample, too much when every worker holds every shard's index). Indexing gives
    :class:`IndexedSample` objects, made on demand."""

    def __init__(self, samples: Sequence[IndexedSample]):
        self.exts = sorted({ext for s in samples for ext in s.members})
        column = {ext: j for j, ext in enumerate(self.exts)}
        self.keys = np.array([s.key.encode() for s in samples], dtype=bytes)
        self.members = np.full((len(samples), len(self.exts), 2), -1, dtype=np.int64)   # (offset, size)
        for i, s in enumerate(samples):
            for ext, where in s.members.items():
                self.members[i, column[ext]] = where

    def __len__(self) -> int:
        return len(self.keys)

    def entry(self, i: int) -> IndexedSample:
        row = self.members[i]
        return IndexedSample(self.keys[i].decode(), {ext: (int(row[j, 0]), int(row[j, 1]))
                                                     for j, ext in enumerate(self.exts) if row[j, 0] >= 0})

    def __getitem__(self, i: int | slice) -> IndexedSample | list[IndexedSample]:
        if isinstance(i, slice):
            return [self.entry(j) for j in range(*i.indices(len(self)))]
        return self.entry(i)


def open_shards(url: str) -> Iterator[AVClip]:
    """Iterate the clips of the shards at ``url`` (folder, pattern, http(s)://, s3://) in order."""
    for shard in shard_urls(url):
        for sample in read_samples(shard):
            yield AVClip.from_sample(sample)
