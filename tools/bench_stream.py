"""Benchmark: stream the same shards from local disk, HTTP and S3 on loopback, with 1 and 2 workers.

    .venv/bin/python tools/bench_stream.py --clips 384 --out docs/bench-stream.json

Writes synthetic shards of realistic size (2 s clips: 32 JPEG frames of 171x128 + 16 kHz wav),
serves them with the Range-capable http.server of tests/servers.py and with moto's S3 server, each
in its own process, and reads one epoch through avshards.stream.StreamLoader (the training path:
DataLoader workers, byte-range reads via the .idx). Two kinds of work: ``io`` hands the raw clips
to the main process (pure reading); ``decode16`` decodes 16 frames per clip in the workers, as the
training loader does. Reports the best of ``--repeat`` epochs as samples/s and MB/s (shard bytes
/ wall time).
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import webdataset as wds
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from avshards.format import FPS, MANIFEST_NAME, SAMPLE_RATE, encode_sample  # noqa: E402
from avshards.index import write_index  # noqa: E402
from avshards.stream import ShardStream, StreamLoader  # noqa: E402


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


def decode16(clip):
    """The training path's per-clip work in the workers: decode two 8-frame views."""
    return clip.frames(range(16))


def one_epoch(url: str, workers: int, batch_size: int, work: str) -> tuple[float, int]:
    stream = ShardStream(url, seed=0, map_fn=decode16 if work == "decode16" else None)
    loader = StreamLoader(stream, batch_size=batch_size, num_workers=workers)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch)
    return time.perf_counter() - start, n


@click.command()
@click.option("--clips", default=384, show_default=True, help="Clips in the benchmark shards.")
@click.option("--shards", default=8, show_default=True, help="Number of shards.")
@click.option("--seconds", default=2.0, show_default=True, help="Clip length in seconds.")
@click.option("--batch-size", default=16, show_default=True, help="Clips per batch.")
@click.option("--repeat", default=3, show_default=True, help="Epochs per setting; the best is reported.")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="Write the results as JSON here.")
def main(clips: int, shards: int, seconds: float, batch_size: int, repeat: int, out: str | None) -> None:
    """Samples/s and MB/s from local disk, HTTP and S3 (moto) on loopback, 1 and 2 workers."""
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
            for work, workers in [(w, n) for w in ("io", "decode16") for n in (1, 2)]:
                for source, url in urls.items():
                    best = min(one_epoch(url, workers, batch_size, work) for _ in range(repeat))
                    seconds_taken, n = best
                    rows.append({"work": work, "source": source, "workers": workers, "samples": n,
                                 "seconds": round(seconds_taken, 3),
                                 "samples_per_s": round(n / seconds_taken, 1),
                                 "MB_per_s": round(total_bytes / 1e6 / seconds_taken, 1)})
                    click.echo(f"{work:8s} {source:6s} workers={workers}  {rows[-1]['samples_per_s']:8.1f} samples/s  "
                               f"{rows[-1]['MB_per_s']:7.1f} MB/s")
        finally:
            http.kill()
            s3.kill()
    result = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
                         f"Python {platform.python_version()}",
              "command": "python tools/bench_stream.py " + " ".join(sys.argv[1:]),
              "clips": clips, "shards": shards, "clip_seconds": seconds, "total_MB": round(total_bytes / 1e6, 1),
              "batch_size": batch_size,
              "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
              "results": rows}
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    click.echo(json.dumps({k: v for k, v in result.items() if k != "results"}))


if __name__ == "__main__":
    main()
