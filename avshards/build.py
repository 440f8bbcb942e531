"""``avshards build``: sources -> shards (parallel, resumable, reproducible) + manifest + failure list.

The source list is first put in a seeded random order (``shuffle``, ``seed``), so a shard holds a
mix of classes rather than one class folder; then videos are assigned to shards in contiguous
blocks of ``videos_per_shard`` of that order, so a shard's content depends only on the source
list, the seed and the options, never on timing or worker count. Each shard is one task
(:func:`avshards.writer.build_shard`) in a process pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from avshards import ray_engine
from avshards.errors import BuildError
from avshards.format import FAILURES_NAME, FPS, MANIFEST_NAME, SAMPLE_RATE, SCHEMA_VERSION
from avshards.index import index_path
from avshards.outputs import open_output
from avshards.remote import join
from avshards.sources import SourceItem, SourceScan, scan_sources, skipped_text
from avshards.transcode import DEFAULT_QUALITY, DEFAULT_SHORT_SIDE, DEFAULT_TIMEOUT, check_ffmpeg
from avshards.writer import (DEFAULT_CLIP_SECONDS, TMP_SUFFIX, ClipOptions, ShardResult, ShardSpec,
                             build_shard, scan_shard)

DEFAULT_VIDEOS_PER_SHARD = 256
SHARD_PATTERN = "shards-{:06d}.tar"
PARTIAL = ".partial"


@dataclass
class BuildReport:
    """What a build did. ``summary()`` is the one line the CLI prints."""

    out: str
    manifest: str
    num_videos: int = 0
    num_shards: int = 0
    built_shards: int = 0
    skipped_shards: int = 0
    num_samples: int = 0
    num_bytes: int = 0
    media_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    skipped_by_extension: dict[str, int] = field(default_factory=dict)   # files under --src not taken

    @property
    def num_failed(self) -> int:
        return len(self.failures)

    @property
    def bytes_per_clip_second(self) -> float:
        return self.num_bytes / self.media_seconds if self.media_seconds else 0.0

    def summary(self) -> str:
        skipped = skipped_text(self.skipped_by_extension)
        return (f"built {self.built_shards} shard(s), skipped {self.skipped_shards} (already done), "
                f"failed {self.num_failed} of {self.num_videos} video(s); {self.num_samples} clips, "
                f"{self.media_seconds / 3600:.3f} h of media, "
                f"{self.bytes_per_clip_second / 1000:.1f} kB per clip-second -> {self.out}"
                + (f"; skipped {skipped} in --src" if skipped else ""))


def plan_shards(items: Sequence[SourceItem], out: str, videos_per_shard: int,
                options: ClipOptions) -> list[ShardSpec]:
    """Contiguous blocks of ``videos_per_shard`` videos, in source order, one spec per shard."""
    specs = []
    for s, first in enumerate(range(0, len(items), videos_per_shard)):
        block = tuple((i, items[i]) for i in range(first, min(first + videos_per_shard, len(items))))
        specs.append(ShardSpec(os.path.join(out, SHARD_PATTERN.format(s)), block, options))
    return specs


def build_order(items: Sequence[SourceItem], shuffle: bool = True, seed: int = 0) -> list[SourceItem]:
    """The order videos are written in: a permutation seeded by ``seed`` (a pure function of the
    list), or the source order itself. Class folders and CSVs list a class's videos together;
    written that way, a shard would hold one or two classes."""
    if not shuffle:
        return list(items)
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items)).tolist()]


def sources_digest(items: Sequence[SourceItem]) -> str:
    """A fingerprint of the source list: a resumed build must see the same one."""
    h = hashlib.sha1()
    for it in items:
        h.update(json.dumps(asdict(it), sort_keys=True).encode())
    return h.hexdigest()


def sizes_digest(items: Sequence[SourceItem]) -> str:
    """A fingerprint of the sources' file sizes (-1 for a missing file), so a source replaced under
    the same name (re-downloaded, re-encoded) is seen; sizes, not times, keep a copy's manifest equal."""
    sizes = [os.path.getsize(it.path) if os.path.isfile(it.path) else -1 for it in items]
    return hashlib.sha1(json.dumps(sizes).encode()).hexdigest()


def _prepare_out(out: str) -> None:
    """Create ``out``, check it is writable, and remove temporary files left by a killed run."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".avshards-write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise BuildError(f"--out {out} is not a writable folder ({err.strerror}); "
                         "choose another --out or fix its permissions.") from None
    for leftover in glob.glob(os.path.join(out, "shards-*" + TMP_SUFFIX)):
        os.remove(leftover)


def _check_resumable(out: str, build_info: dict[str, Any]) -> None:
    """Refuse to mix shards built from other sources or options into one dataset."""
    path = os.path.join(out, MANIFEST_NAME)
    if not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f).get("build", {})
    keys = ("options", "sources_digest", "videos_per_shard", "shuffle", "seed")
    keys += ("sizes_digest",) if "sizes_digest" in old else ()   # manifests of older avshards lack it
    if any(old.get(k) != build_info[k] for k in keys):
        raise BuildError(f"{out} holds shards built from other sources or options; "
                         "add --overwrite to rebuild them, or choose another --out.")


def _old_failures(out: str) -> dict[str, list[dict[str, str]]]:
    """Failures recorded by an earlier run (finished or killed), by shard name."""
    by_shard: dict[str, list[dict[str, str]]] = {}
    for name in (FAILURES_NAME, FAILURES_NAME + PARTIAL):
        path = os.path.join(out, name)
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        rec = json.loads(line)
                        by_shard.setdefault(rec.get("shard", ""), []).append(rec)
    return by_shard


def _skipped_result(spec: ShardSpec, old: dict[str, list[dict[str, str]]], scan=scan_shard) -> ShardResult:
    """A finished shard's result, its failures taken from the earlier run's records."""
    result = scan(spec.path)
    known = {f["source"]: f for f in old.get(result.name, [])}
    present = set(result.video_indices)
    for i, item in spec.videos:
        if i not in present:
            result.failures.append(known.get(item.path) or {
                "source": item.path, "shard": result.name,
                "reason": "failed in an earlier, interrupted build; run with --overwrite to retry it"})
    return result


def _write_json_atomic(path: str, text: str) -> None:
    with open(path + TMP_SUFFIX, "w") as f:
        f.write(text)
    os.replace(path + TMP_SUFFIX, path)


class _Bar:
    """Progress sink for in-process builds: the same ``put`` a manager queue offers."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def put(self, n: int) -> None:
        self.bar.update(n)


_IN_TASK = False      # in a pool worker: whether it is building a shard now


def _worker_init() -> None:
    """A pool worker takes Ctrl-C while it builds a shard (its clean-up runs, the parent reports the
    interrupt) and ignores it while it waits for work: an idle worker would print a
    KeyboardInterrupt traceback, and the parent's shutdown ends it anyway."""
    signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum, frame) -> None:
    if _IN_TASK:
        raise KeyboardInterrupt


def _in_worker(task, spec: ShardSpec, ticks):
    global _IN_TASK
    _IN_TASK = True
    try:
        return task(spec, ticks)
    finally:
        _IN_TASK = False


def _run_shards(specs: list[ShardSpec], workers: int, show: bool,
                on_result: Callable[[ShardResult], None], task=build_shard) -> None:
    """Run ``task`` (build_shard, or build + upload) for ``specs`` in a process pool (in-process for
    one worker), with a tqdm bar in videos.

    At most ``workers`` shards are submitted at a time, so after Ctrl-C no queued shard starts.
    """
    from tqdm import tqdm

    if not specs:
        return
    bar = tqdm(total=sum(len(s.videos) for s in specs), unit="video", disable=not show,
               dynamic_ncols=True, desc="build")
    try:
        if workers <= 1 or len(specs) == 1:
            for spec in specs:
                on_result(task(spec, _Bar(bar)))
            return
        waiting = iter(specs)
        with multiprocessing.Manager() as manager, \
                cf.ProcessPoolExecutor(max_workers=min(workers, len(specs)), initializer=_worker_init) as pool:
            ticks = manager.Queue()
            running = {pool.submit(_in_worker, task, spec, ticks) for spec in itertools.islice(waiting, workers)}
            while running:
                done, running = cf.wait(running, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                _drain(ticks, bar)
                for fut in done:
                    on_result(fut.result())
                    running |= {pool.submit(_in_worker, task, spec, ticks) for spec in itertools.islice(waiting, 1)}
    finally:
        bar.close()


def _drain(ticks, bar) -> None:
    while True:
        try:
            bar.update(ticks.get_nowait())
        except queue.Empty:
            return


def build(src: str | os.PathLike | Sequence[SourceItem], out: str | os.PathLike, *,
          root: str | os.PathLike | None = None, short_side: int = DEFAULT_SHORT_SIDE,
          quality: int = DEFAULT_QUALITY, clip_seconds: float = DEFAULT_CLIP_SECONDS,
          videos_per_shard: int = DEFAULT_VIDEOS_PER_SHARD, workers: int | None = None,
          timeout: float = DEFAULT_TIMEOUT, overwrite: bool = False, progress: bool = True,
          engine: str = "local", ray_address: str | None = None,
          staging: str | os.PathLike | None = None, shuffle: bool = True, seed: int = 0) -> BuildReport:
    """Transcode ``src`` (folder, CSV, list file, glob, or a list of SourceItem) into shards in ``out``.

    ``out`` is a folder or ``s3://bucket/prefix/`` (shards staged in ``staging``, then uploaded;
    see :mod:`avshards.outputs`). ``engine``: "local" (a process pool of ``workers``) or "ray"
    (one Ray task per shard, on the cluster at ``ray_address`` or a local instance; see
    :mod:`avshards.ray_engine`). Both run the same shard function: the shards are identical.
    ``shuffle``: write the videos in the order :func:`build_order` ``(seed)`` gives (default), not
    in source order (which keeps each class folder together).

    Returns a :class:`BuildReport`. Raises :class:`BuildError` / ``SourceError`` /
    ``MissingFFmpeg`` for problems the user must fix; failing videos are reported, not raised.
    """
    started = time.monotonic()
    if short_side < 2 or short_side % 2:
        raise BuildError(f"--short-side {short_side} must be an even number of pixels (e.g. 128).")
    if not 2 <= quality <= 31:
        raise BuildError(f"--quality {quality} is outside ffmpeg's JPEG scale 2 (best) .. 31 (worst).")
    if clip_seconds < 0.5 or videos_per_shard < 1:
        raise BuildError("--clip-seconds must be at least 0.5 and --videos-per-shard at least 1.")
    if engine not in ("local", "ray"):
        raise BuildError(f"--engine {engine}: use local (this machine's cores) or ray (a Ray cluster).")
    run_shards = _run_shards
    if engine == "ray":
        run_shards = ray_engine.runner(ray_address)   # fails now, not mid-build, without Ray
    ffmpeg_version = check_ffmpeg()
    scan = SourceScan(list(src), "items") if isinstance(src, (list, tuple)) else scan_sources(src, root)
    items = scan.items
    if not items:
        raise BuildError("the source list is empty; give at least one video.")
    dest = open_output(out, staging)   # a folder, or S3 (shards staged in dest.local, then uploaded)
    out = dest.local
    _prepare_out(out)

    options = ClipOptions(short_side, quality, float(clip_seconds), float(timeout))
    build_info = {"options": {"short_side": short_side, "quality": quality, "clip_seconds": float(clip_seconds),
                              "fps": FPS, "sample_rate": SAMPLE_RATE},
                  "videos_per_shard": videos_per_shard, "sources_digest": sources_digest(items),
                  "sizes_digest": sizes_digest(items),
                  "num_sources": len(items), "ffmpeg": ffmpeg_version, "shuffle": shuffle, "seed": seed}
    items = build_order(items, shuffle, seed)
    specs = plan_shards(items, out, videos_per_shard, options)
    if overwrite:
        _remove_stale(out, specs)
        dest.remove_stale({os.path.basename(s.path) for s in specs})
    else:
        _check_resumable(out, build_info)

    old = {} if overwrite else _old_failures(out)
    results: dict[str, ShardResult] = {}
    todo = []
    for spec in specs:
        if not overwrite and dest.finished(spec.path):
            results[os.path.basename(spec.path)] = _skipped_result(spec, old, dest.scan)
        else:
            todo.append(spec)

    partial = os.path.join(out, FAILURES_NAME + PARTIAL)
    with open(partial, "a") as log:
        def on_result(r: ShardResult) -> None:
            results[r.name] = r
            for fail in r.failures:   # kept across a kill, so a resumed build still knows why
                log.write(json.dumps(fail, sort_keys=True) + "\n")
            log.flush()

        run_shards(todo, workers or os.cpu_count() or 1, progress, on_result, task=dest.task)

    ordered = [results[os.path.basename(s.path)] for s in specs]
    report = BuildReport(out=dest.url, manifest=join(dest.url, MANIFEST_NAME), num_videos=len(items),
                         num_shards=len(specs), built_shards=len(todo), skipped_shards=len(specs) - len(todo),
                         num_samples=sum(r.num_samples for r in ordered),
                         num_bytes=sum(r.num_bytes for r in ordered),
                         media_seconds=sum(r.seconds for r in ordered),
                         failures=[f for r in ordered for f in r.failures], skipped_by_extension=dict(scan.skipped))
    _write_outputs(out, ordered, items, build_info, report)
    dest.publish()
    os.remove(partial)
    report.wall_seconds = time.monotonic() - started
    return report


def _remove_stale(out: str, specs: list[ShardSpec]) -> None:
    """With --overwrite, shards of an earlier, larger build must not linger beside the new ones."""
    planned = {os.path.basename(s.path) for s in specs}
    for path in glob.glob(os.path.join(out, "shards-*.tar")):
        if os.path.basename(path) not in planned:
            os.remove(path)
            if os.path.exists(index_path(path)):
                os.remove(index_path(path))
    if os.path.exists(os.path.join(out, FAILURES_NAME + PARTIAL)):
        os.remove(os.path.join(out, FAILURES_NAME + PARTIAL))


def _write_outputs(out: str, shards: list[ShardResult], items: Sequence[SourceItem],
                   build_info: dict[str, Any], report: BuildReport) -> None:
    """manifest.json and failures.jsonl: deterministic (no times), so rebuilds are byte-identical."""
    labels = sorted({it.label for it in items if it.label is not None})
    counts: dict[str, int] = {}
    for r in shards:
        for label, n in r.label_counts.items():
            counts[label] = counts.get(label, 0) + n
    manifest = {
        "schema": "avshards.manifest", "schema_version": SCHEMA_VERSION,
        "shards": [r.entry() for r in shards],
        "num_shards": len(shards), "num_samples": report.num_samples, "num_videos": report.num_videos,
        "num_failed": report.num_failed, "num_bytes": report.num_bytes,
        "num_with_audio": sum(r.num_with_audio for r in shards), "seconds": round(report.media_seconds, 3),
        "label_counts": counts,
        "labels": labels, "label_map": {label: i for i, label in enumerate(labels)},
        "fps": FPS, "sample_rate": SAMPLE_RATE, "build": build_info,
    }
    _write_json_atomic(os.path.join(out, FAILURES_NAME),
                       "".join(json.dumps(f, sort_keys=True) + "\n" for f in report.failures))
    _write_json_atomic(os.path.join(out, MANIFEST_NAME), json.dumps(manifest, indent=1, sort_keys=True) + "\n")
