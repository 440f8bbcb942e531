"""Benchmark the GPU data paths next to the CPU one, and the training step with AMP; prints JSON.

Settings (each skipped with a reason when its requirement is missing):

- ``dali-external``: ``make_train_loader(backend="dali")``: DataLoader workers read shards, select
  the two views and draw the parameters; DALI decodes (nvJPEG on the GPU) and augments them.
- ``dali-reader``: :class:`crisscross.data.dali.reader.DaliShardLoader` (DALI's readers.webdataset
  with the shards' .idx files; view selection in ``fn.python_function``).
- ``python-per-clip``: the main-process Python each DALI path spends per clip, timed alone (thread
  CPU time): the reader path's ``ViewSelector`` (cuts the frames out, picks the views, draws the
  parameters, converts them: serial, under the main process's GIL) against the external-source
  path's conversion + ``feed_input`` (its view choice and draws run in DataLoader workers, also timed).
- ``torch-gpu``: ``make_train_loader(device="cuda")``: workers move bytes, torchvision nvJPEG +
  GPU augmentation in the main process (needs CUDA).
- ``torch-cpu``: the torch backend decoding and augmenting in CPU workers.
- ``train-amp``: forward + backward + Adam step of the full CrissCross model under bf16 autocast
  on random batches of the real shapes (needs CUDA; the data paths feed it in practice).

Without a GPU, the DALI rows run on DALI's CPU operators (the CI configuration), so they say what
the graph costs on a CPU, not what nvJPEG does.

    python tools/bench_gpu.py                    # JSON lines + a markdown table
    python tools/bench_gpu.py --write            # also docs/bench-dali.json + "## DALI backend" in docs/benchmarks.md
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from benchutil import cpu_seconds, write_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "## DALI backend"


def has_dali() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def measure(batches, clips_of, sync: bool) -> dict:
    """clips/s overall and after the first batch (start-up excluded), CPU-ms per clip."""
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    n = n_first = 0
    first, cpu_first = None, cpu0
    for batch in batches:
        if sync:
            torch.cuda.synchronize()
        n += clips_of(batch)
        if first is None:
            first, n_first, cpu_first = time.perf_counter(), n, cpu_seconds()
    end = time.perf_counter()
    steady = (n - n_first) / (end - first) if first is not None and n > n_first else float("nan")
    cpu_steady = cpu_seconds() - cpu_first
    return {"clips": n, "wall_s": round(end - t0, 2), "clips_per_s": round(n / (end - t0), 1),
            "clips_per_s_after_first_batch": round(steady, 1),
            "cpu_ms_per_clip": round(1000 * (cpu_seconds() - cpu0) / max(n, 1), 1),
            "cpu_ms_per_clip_after_first_batch": round(1000 * cpu_steady / max(n - n_first, 1), 1)}


def loader_run(url: str, clips: int, batch_size: int, workers: int, backend: str, device: str) -> dict:
    from crisscross.data.loader import make_train_loader

    loader = make_train_loader(url, batch_size, num_workers=workers, backend=backend, device=device,
                               seed=0, epoch_size=clips)
    return measure(loader, lambda b: len(b["keys"]), device == "cuda")


def reader_run(url: str, clips: int, batch_size: int, device: str) -> dict:
    from avshards.index_cli import index_shards, local_shards
    from crisscross.data.dali.reader import DaliShardLoader

    urls = local_shards(url)
    for _ in index_shards(urls):          # the reader wants .idx beside every tar
        pass
    def make(size: int) -> DaliShardLoader:
        return DaliShardLoader(urls, size, "mild", "gpu" if device == "cuda" else "cpu",
                               num_threads=min(4, os.cpu_count() or 1))

    loader = make(batch_size)
    if len(loader) == 0:                  # fewer clips than one batch: one batch of all of them
        loader = make(loader.samples_per_rank)
    epochs = max(1, -(-clips // max(1, len(loader) * batch_size)))

    def batches():
        for _ in range(epochs):
            yield from loader

    return measure(batches(), lambda b: b["v1"].shape[0], device == "cuda")


def raw_samples(url: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(json, mjpeg, wav) member bytes of every clip with audio, as DALI's reader hands them over."""
    from avshards.index_cli import local_shards

    out = []
    for path in local_shards(url):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        out += [tuple(np.frombuffer(c[e], np.uint8) for e in ("json", "mjpeg", "wav"))
                for c in members.values() if "wav" in c]
    return out


def python_run(url: str, clips: int, batch_size: int) -> dict:
    """Main-process µs per clip of each DALI feeding path's Python (see the module docstring)."""
    from avshards.format import AVClip
    from crisscross.data.dali.feeder import DaliAugmenter
    from crisscross.data.dali.inputs import from_prepared, input_names
    from crisscross.data.dali.reader import ViewSelector
    from crisscross.data.selection import PrepareClip

    samples = raw_samples(url)
    samples = [samples[i % len(samples)] for i in range(max(clips, batch_size))]
    prepare = PrepareClip("mild")
    selector, epoch = ViewSelector(prepare, input_names(prepare.video_frames)), np.array(0, np.int64)

    def per_clip(fn, items) -> tuple[float, list]:
        t0, out = time.thread_time(), [fn(x) for x in items]
        return 1e6 * (time.thread_time() - t0) / len(items), out

    reader_us, _ = per_clip(lambda s: selector(*s, epoch), samples)
    clips_ = [AVClip.from_sample({"__key__": f"k{i}", "json": bytes(m), "mjpeg": bytes(j), "wav": bytes(w)})
              for i, (m, j, w) in enumerate(samples)]
    worker_us, items = per_clip(prepare, clips_)
    augmenter, feed_s, fed = DaliAugmenter(batch_size, "cpu"), 0.0, 0
    for i in range(0, len(items) - batch_size + 1, batch_size):
        t0 = time.thread_time()
        augmenter.feed([from_prepared(it) for it in items[i:i + batch_size]])
        feed_s, fed = feed_s + time.thread_time() - t0, fed + batch_size
        augmenter.pipe.run()                 # consumed untimed, so the next feed is not queued behind it
    main_us = 1e6 * feed_s / fed
    return {"clips": len(samples), "reader_selector_us_per_clip": round(reader_us),
            "external_worker_us_per_clip": round(worker_us), "external_main_us_per_clip": round(main_us),
            "batch_size": batch_size}


def train_run(batch_size: int, steps: int) -> dict:
    """Training clips/s of the full model with bf16 autocast on random two-view batches."""
    from crisscross import paper
    from crisscross.losses import crisscross_loss
    from crisscross.models import build_crisscross

    model = build_crisscross().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    s, steps_a = paper.CROP_SIZE, int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE) // paper.AUDIO_AUG.hop_length + 1
    batch = {k: torch.randn(batch_size, 3, paper.VIDEO_FRAMES, s, s, device="cuda") for k in ("v1", "v2")}
    batch |= {k: torch.randn(batch_size, 1, paper.AUDIO_AUG.n_mels, steps_a, device="cuda") for k in ("a1", "a2")}

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = crisscross_loss(**model(**batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):                    # warm-up (cuDNN autotune, allocator)
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"clips": batch_size * steps, "wall_s": round(wall, 2),
            "clips_per_s": round(batch_size * steps / wall, 1), "batch_size": batch_size,
            "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1)}


def settings(cuda: bool, dali: bool) -> list[tuple[str, str | None]]:
    """(name, reason it is skipped or None)."""
    no_dali = None if dali else "nvidia-dali not installed (pip install 'crisscross-av[dali]')"
    no_cuda = None if cuda else "no CUDA GPU"
    return [("dali-external", no_dali), ("dali-reader", no_dali), ("python-per-clip", no_dali), ("torch-gpu", no_cuda),
            ("torch-cpu", None), ("train-amp", no_cuda)]


def markdown(rows: list[dict], info: dict) -> str:
    lines = [SECTION, "",
             f"Machine: {info['machine']}; load average at start {info['load']} (cores shared with other jobs).",
             f"Command: `{info['command']}`. Data: {info['data']}; {info['clips']} two-view clips per row",
             f"(2 x 8 x 112^2 video + 2 x 1 x 80 x 201 log-mel, full pretraining augmentation), batch "
             f"{info['batch_size']}, {info['workers']} DataLoader workers. CPU-ms = all processes' CPU time / clips.", "",
             "| setting | where | clips/s | clips/s after 1st batch | CPU-ms / clip | CPU-ms / clip after 1st |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['setting']} | - | skipped: {r['skipped']} | | | |")
        elif "reader_selector_us_per_clip" in r:
            lines.append(f"| {r['setting']} | {r['where']} | reader path: ViewSelector {r['reader_selector_us_per_clip']} "
                         f"µs/clip (serial); external source: {r['external_main_us_per_clip']} µs/clip in the main "
                         f"process + {r['external_worker_us_per_clip']} µs/clip in workers | | | |")
        else:
            lines.append(f"| {r['setting']} | {r['where']} | {r['clips_per_s']} | {r.get('clips_per_s_after_first_batch', '')} "
                         f"| {r.get('cpu_ms_per_clip', '')} | {r.get('cpu_ms_per_clip_after_first_batch', '')} |")
    return "\n".join(lines + [""] + info["notes"]) + "\n"


NOTES = [
    "DALI rows without a GPU run the same pipeline definition on DALI's CPU operators (`device_id=None`,",
    "the CI configuration): they show what the graph costs on a CPU, not nvJPEG. The DALI external-source",
    "row injects the loader's own parameters; the reader row draws the same ones (the loader's PrepareClip)",
    "and cuts frames out in `fn.python_function` (Python under the main process's GIL); both resume exactly.",
    "The reader's padded last batch of each epoch is run and not yielded, which this short run counts as CPU cost",
    "(the test shards hold only a few 10 s clips, so the row is a few small epochs). DataLoader workers'",
    "CPU time is counted when they exit, so \"after 1st\" includes their start-up in the torch-cpu row.",
    "GPU rows (DALI with nvJPEG, torch on the GPU, the AMP training step; target >= 2,000 two-view clips/s",
    "per GPU path on one H100 with <= 4 workers at < 1 ms CPU per clip) are NOT measured yet: no GPU",
    "machine with DALI was available to this work. Run this tool there to fill them in.",
]


@click.command()
@click.option("--shards", default=None, help="Shards to read (default: build from the test media).")
@click.option("--media", default=os.path.expanduser("~/.cache/avshards-media"), show_default=True,
              help="Folder of the real test media (tests/conftest.py fetches it).")
@click.option("--clips", default=64, show_default=True, help="Two-view clips per data row.")
@click.option("--batch-size", default=16, show_default=True, help="Clips per batch (data rows).")
@click.option("--workers", default=2, show_default=True, help="DataLoader workers (data rows).")
@click.option("--train-batch", default=64, show_default=True, help="Clips per training step (train-amp).")
@click.option("--train-steps", default=20, show_default=True, help="Timed training steps (train-amp).")
@click.option("--only", default=None, help="Comma-separated settings to run (default: all).")
@click.option("--write", is_flag=True, help="Write docs/bench-dali.json and the DALI section of docs/benchmarks.md.")
def main(shards, media, clips, batch_size, workers, train_batch, train_steps, only, write) -> None:
    """Measure DALI and torch data paths (GPU when present) and the AMP training step."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_loader import build_media_shards      # the loader benchmark's shards, same data

    torch.set_num_threads(1)      # the main process only orchestrates; spinning pools cost CPU
    cuda, dali = torch.cuda.is_available(), has_dali()
    device = "cuda" if cuda else "cpu"
    where = "GPU" if cuda else "CPU"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = shards
        for name, skipped in settings(cuda, dali):
            if only and name not in only.split(","):
                continue
            if skipped:
                row = {"setting": name, "skipped": skipped}
            else:
                if url is None and name != "train-amp":
                    url = build_media_shards(Path(media), Path(tmp))
                if name == "dali-external":
                    row = loader_run(url, clips, batch_size, workers, "dali", device) | {"where": f"DALI on {where}"}
                elif name == "dali-reader":
                    row = reader_run(url, clips, batch_size, device) | {"where": f"DALI on {where}"}
                elif name == "python-per-clip":
                    row = python_run(url, clips, batch_size) | {"where": "main process, thread CPU"}
                elif name == "torch-gpu":
                    row = loader_run(url, clips, batch_size, workers, "torch", "cuda") | {"where": "GPU"}
                elif name == "torch-cpu":
                    row = loader_run(url, clips, batch_size, workers, "torch", "cpu") | {"where": "CPU workers"}
                else:
                    row = train_run(train_batch, train_steps) | {"where": "GPU, bf16 autocast"}
                row = {"setting": name, **row}
            click.echo(json.dumps(row))
            rows.append(row)
    versions = f"torch {torch.__version__}" + (f", DALI {dali_version()}" if dali else ", no DALI")
    gpu = f", {torch.cuda.get_device_name()}" if cuda else ", no GPU"
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores{gpu}, {versions}",
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "clips": clips, "batch_size": batch_size,
            "workers": workers, "command": "python tools/bench_gpu.py --write", "notes": NOTES,
            "data": shards or "trailer_bbb + bigbuckbunny + earth built with `avshards build --clip-seconds 10`"}
    text = markdown(rows, info)
    click.echo(text)
    if write:
        (REPO / "docs" / "bench-dali.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1) + "\n")
        write_section(REPO / "docs" / "benchmarks.md", SECTION, text)


def dali_version() -> str:
    import nvidia.dali

    return nvidia.dali.__version__


if __name__ == "__main__":
    main()
