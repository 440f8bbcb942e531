"""Benchmark: stream the same shards from local disk, HTTP and S3 on loopback; this tree against a baseline.

    .venv/bin/python tools/bench_stream.py --clips 384 --baseline /tmp/avshards-85eda97 --out docs/bench-stream.json

Writes synthetic shards of realistic size (2 s clips: 32 JPEG frames of 171x128 + 16 kHz wav),
serves them with the Range-capable http.server of tests/servers.py and with moto's S3 server, each
in its own process, and reads one epoch through avshards.stream.StreamLoader (the training path:
DataLoader workers, byte-range reads via the .idx) with the training loader's shuffle buffer
(256). Each epoch runs in a fresh process whose PYTHONPATH is this tree or ``--baseline`` (a
checkout of an older commit, e.g. ``git worktree add /tmp/avshards-85eda97 85eda97``), so both
versions are measured side by side on the same shards, servers and machine. Two kinds of work:
``io`` hands the raw clips to the main process (pure reading); ``decode16`` decodes 16 frames per
clip in the workers, as the training loader does. Reports the best of ``--repeat`` epochs as
samples/s and MB/s (shard bytes / wall time), and the ranged requests per worker and epoch: counted
by the HTTP server (both versions; the new one's workers also read one block of the next epoch
ahead before they stop, which this count includes) and by the stream (``stats["requests"]``, new). ``--mixing`` prints the label mixing of the plan at Kinetics-400 scale instead (no I/O).
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import webdataset as wds
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from avshards.format import FPS, MANIFEST_NAME, SAMPLE_RATE, encode_sample  # noqa: E402
from avshards.index import write_index  # noqa: E402


def make_shards(out: Path, clips: int, shards: int, seconds: float) -> int:
    """Write ``shards`` tars of noisy-image clips (+ .idx, manifest); return their total bytes."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(8):   # a few distinct frames, reused: encoding is not what we measure
        img = (np.linspace(0, 255, 171)[None, :, None] + rng.normal(0, 24, (128, 171, 3))).clip(0, 255)
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=85)
        frames.append(buf.getvalue())
    n = int(seconds * FPS)
    stream = b"".join(frames[i % 8] for i in range(n))
    offsets = np.cumsum([0] + [len(frames[i % 8]) for i in range(n)]).tolist()
    pcm = (rng.normal(0, 3000, int(seconds * SAMPLE_RATE))).astype(np.int16)
    out.mkdir(parents=True, exist_ok=True)
    entries, k = [], 0
    for s in range(shards):
        path = out / f"shards-{s:06d}.tar"
        count = clips // shards + (s < clips % shards)
        with wds.TarWriter(str(path), mtime=0) as sink:
            for _ in range(count):
                sink.write(encode_sample(f"clip{k:06d}", {"label": "x", "width": 171, "height": 128},
                                         stream, offsets, pcm))
                k += 1
        write_index(str(path))
        entries.append({"name": path.name, "num_samples": count, "num_bytes": path.stat().st_size})
    (out / MANIFEST_NAME).write_text(json.dumps({"shards": entries, "num_samples": k, "labels": ["x"]}))
    return sum(e["num_bytes"] for e in entries)


def serve(*args: str) -> tuple[subprocess.Popen, dict]:
    """Start tests/servers.py in its own process; return it and the JSON line it prints."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "servers.py"), *args],
                            stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())


RUNNER = r"""
import json, sys, time
from avshards.stream import ShardStream, StreamLoader

def decode16(clip):
    return clip.frames(range(16))

args = json.loads(sys.argv[1])
best = None
for _ in range(args["repeat"]):
    stream = ShardStream(args["url"], seed=0, shuffle_buffer=args["shuffle_buffer"],
                         map_fn=decode16 if args["work"] == "decode16" else None)
    loader = StreamLoader(stream, batch_size=args["batch_size"], num_workers=args["workers"])
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch)
    seconds = time.perf_counter() - start
    if best is None or seconds < best[0]:
        best = (seconds, n, loader.last_epoch_stats)
print(json.dumps({"seconds": best[0], "samples": best[1], "stats": best[2]}))
"""


def http_requests(url: str) -> int:
    """Ranged requests (sample reads) the benchmark's HTTP server has answered so far."""
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/__requests__") as resp:
        return json.loads(resp.read())["ranged"]


def epochs(tree: Path, url: str, work: str, workers: int, batch_size: int, repeat: int) -> dict:
    """Best of ``repeat`` epochs read with the avshards of ``tree``, in a process of its own."""
    args = {"url": url, "work": work, "workers": workers, "batch_size": batch_size, "repeat": repeat,
            "shuffle_buffer": 256}
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(args)], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout   # cwd: "-c" puts it first on sys.path
    return json.loads(out.strip().splitlines()[-1])


def mixing_table(classes: int = 400, per_class: int = 600, videos_per_shard: int = 256, world: int = 8,
                 workers: int = 8, source_clips: int = 360) -> list[dict]:
    """Distinct labels and same-source pairs per batch of the stream's plan at Kinetics-400 scale
    (240K clips in class order or shuffled, 8 ranks x 8 workers; "same source": as if every 360
    consecutive clips were cut from one long source), against an i.i.d. shuffle. Pure plan
    functions, no I/O. "before" is the plan of avshards before the chunk order (contiguous parts,
    each block of 256 samples permuted)."""
    from math import comb

    from avshards.plan import Layout, emission_order, epoch_order, locate, part_positions

    n = classes * per_class
    counts = [videos_per_shard] * (n // videos_per_shard) + ([n % videos_per_shard] if n % videos_per_shard else [])
    starts = np.cumsum([0] + counts[:-1])
    source = np.arange(n) // source_clips
    variants = [("before", 0, 256, 64), ("chunk 16", 16, 256, 64), ("chunk 4 (default)", 4, 256, 64),
                ("chunk 1", 1, 256, 64), ("chunk 4, batch 256", 4, 256, 256),
                ("chunk 4, batch 256, buffer 1024", 4, 1024, 256)]
    rows = []
    for built in ("sorted", "shuffled"):
        video_order = np.arange(n) if built == "sorted" else np.random.default_rng(0).permutation(n)
        label = video_order // per_class               # clip i of the build holds video video_order[i]
        for name, chunk, buffer, batch in variants:
            layout = Layout(world, workers, buffer if chunk else 0, max(1, chunk))
            remaining = epoch_order(n, 0, 0, layout)
            distinct, pairs = [], []
            for reader in range(0, layout.parts, 7):   # every 7th reader: enough for a mean
                part = part_positions(remaining, reader, layout)
                if chunk:
                    part = part[emission_order(len(part), layout, 0, 0, 0, *divmod(reader, workers), 0)]
                else:                                  # before: each block of 256 permuted in place
                    rng = np.random.default_rng(reader)
                    part = np.concatenate([rng.permutation(part[i:i + buffer]) for i in range(0, len(part), buffer)])
                shard, sample, _ = locate(counts, 0, True, 0, n, part)
                clip = starts[shard] + sample
                for b in range(0, len(clip) - batch + 1, batch):
                    ids = clip[b:b + batch]
                    distinct.append(len(set(label[ids].tolist())))
                    _, same = np.unique(source[ids], return_counts=True)
                    pairs.append(int((same * (same - 1) // 2).sum()))
            iid_labels = classes * (1 - comb(n - per_class, batch) / comb(n, batch))
            rows.append({"build": built, "stream": name, "batch": batch, "shuffle_buffer": buffer,
                         "distinct_labels": round(float(np.mean(distinct)), 1),
                         "iid_distinct_labels": round(iid_labels, 1),
                         "vs_iid": round(float(np.mean(distinct)) / iid_labels, 2),
                         "same_source_pairs": round(float(np.mean(pairs)), 1),
                         "iid_same_source_pairs": round(comb(batch, 2) * (source_clips - 1) / (n - 1), 1),
                         "requests_per_1000_clips": round(1000 / chunk, 1) if chunk else None})
    return rows


@click.command()
@click.option("--clips", default=384, show_default=True, help="Clips in the benchmark shards.")
@click.option("--shards", default=8, show_default=True, help="Number of shards.")
@click.option("--seconds", default=2.0, show_default=True, help="Clip length in seconds.")
@click.option("--batch-size", default=16, show_default=True, help="Clips per batch.")
@click.option("--repeat", default=2, show_default=True, help="Epochs per setting; the best is reported.")
@click.option("--baseline", default=None, type=click.Path(file_okay=False, exists=True),
              help="A checkout of an older commit to measure side by side (git worktree add DIR COMMIT).")
@click.option("--mixing", is_flag=True, help="Print the plan's label mixing at Kinetics-400 scale and stop.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the results as JSON here.")
def main(clips: int, shards: int, seconds: float, batch_size: int, repeat: int, baseline: str | None,
         mixing: bool, out: str | None) -> None:
    """Samples/s and MB/s from local disk, HTTP and S3 (moto) on loopback, 1 and 2 workers."""
    if mixing:
        rows = mixing_table()
        for row in rows:
            click.echo(json.dumps(row))
        if out:
            Path(out).write_text(json.dumps({"command": "python tools/bench_stream.py " + " ".join(sys.argv[1:]),
                                             "mixing": rows}, indent=1) + "\n")
        return
    trees = {"new": REPO, **({"baseline": Path(baseline).resolve()} if baseline else {})}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        total_bytes = make_shards(folder, clips, shards, seconds)
        http, http_info = serve("http", str(folder))
        s3, s3_env = serve("s3")
        try:
            os.environ.update(s3_env)
            import boto3

            client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
            client.create_bucket(Bucket="bench")
            for path in sorted(folder.iterdir()):
                client.upload_file(str(path), "bench", "k400/" + path.name)
            urls = {"local": str(folder), "http": http_info["url"] + "/", "s3": "s3://bench/k400/"}
            rows = []
            settings = [(w, n, src) for w in ("io", "decode16") for n in (1, 2) for src in urls
                        if src == "local" or n == 2]
            for work, workers, source in settings:
                for version, tree in trees.items():     # side by side: same shards, servers, minute
                    before = http_requests(urls["http"])
                    best = epochs(tree, urls[source], work, workers, batch_size, repeat)
                    served = http_requests(urls["http"]) - before
                    rows.append({"work": work, "source": source, "workers": workers, "version": version,
                                 "samples": best["samples"], "seconds": round(best["seconds"], 3),
                                 "samples_per_s": round(best["samples"] / best["seconds"], 1),
                                 "MB_per_s": round(total_bytes / 1e6 / best["seconds"], 1),
                                 "http_requests_per_worker": round(served / repeat / workers, 1)
                                 if source == "http" else None,
                                 "requests_per_worker": round(best["stats"]["requests"] / workers, 1)
                                 if "requests" in best["stats"] else None})
                    click.echo(f"{work:8s} {source:6s} workers={workers} {version:8s} "
                               f"{rows[-1]['samples_per_s']:8.1f} samples/s {rows[-1]['MB_per_s']:7.1f} MB/s  "
                               f"requests/worker {rows[-1]['requests_per_worker'] or rows[-1]['http_requests_per_worker']}")
        finally:
            http.kill()
            s3.kill()
    result = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
                         f"Python {platform.python_version()}",
              "command": "python tools/bench_stream.py " + " ".join(sys.argv[1:]),
              "clips": clips, "shards": shards, "clip_seconds": seconds, "total_MB": round(total_bytes / 1e6, 1),
              "batch_size": batch_size, "shuffle_buffer": 256,
              "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
              "results": rows}
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    click.echo(json.dumps({k: v for k, v in result.items() if k != "results"}))


if __name__ == "__main__":
    main()
