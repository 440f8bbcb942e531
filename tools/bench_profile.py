"""What bounds the torch path: our whole two-view clip (select, JPEG decode, full pretraining
augmentation, as the loader's worker runs it) in one process on one thread, for py-spy to sample,
and the share of the samples each crisscross function holds innermost.

    py-spy record --rate 50 --format raw -o /tmp/clip.txt -- python tools/bench_profile.py --visits 20
    python tools/bench_profile.py --summarise /tmp/clip.txt      # the table in docs/benchmarks.md
"""

from __future__ import annotations

import collections
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import bench  # noqa: E402

MEDIA = Path(os.environ.get("AVSHARDS_MEDIA", Path.home() / ".cache" / "avshards-media"))
LOOP = "augment_prepared"       # the samples counted: those inside the loader's decode + augment


def run_clips(media: Path, visits: int) -> None:
    """Every clip of the `make bench` shards ``visits`` times, prepared, decoded and augmented in
    batches of 16 (the loader's worker path, without the DataLoader)."""
    from avshards.reader import open_shards
    from crisscross.data.loader import augment_prepared
    from crisscross.data.selection import PrepareClip

    with tempfile.TemporaryDirectory() as tmp:
        url = str(bench.build_shards(bench.source_files(media, bench.FULL_FILES), Path(tmp) / "shards"))
        clips, n, t = list(open_shards(url)), 0, time.process_time()
        for visit in range(visits):
            prepare = PrepareClip("mild", 0, visit)
            items = [it for it in (prepare(c) for c in clips) if it is not None]
            for i in range(0, len(items), 16):
                augment_prepared(items[i:i + 16])
            n += len(items)
    click.echo(f"{n} two-view clips, {1000 * (time.process_time() - t) / n:.1f} CPU-ms per clip")


def summarise(raw: Path, top: int) -> str:
    """A markdown table: share of the samples under the loop per innermost crisscross function."""
    total, by_function = 0, collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if LOOP not in stack:
            continue
        ours = [f for f in stack.split(";") if "crisscross" in f]
        by_function[re.sub(r" \(.*\)$", "", ours[-1])] += int(count)
        total += int(count)
    rows = [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in by_function.most_common(top)]
    return "\n".join([f"| function (innermost of ours) | share of {total} samples |", "|---|---|", *rows])


@click.command()
@click.option("--media", type=click.Path(file_okay=False, path_type=Path), default=MEDIA,
              show_default=True, help="Folder of the public sample media (`make media`).")
@click.option("--visits", default=20, show_default=True, help="Passes over the shards' clips.")
@click.option("--summarise", "raw", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Summarise a py-spy --format raw file instead of running.")
@click.option("--top", default=12, show_default=True, help="Functions in the summary.")
def main(media: Path, visits: int, raw: Path | None, top: int) -> None:
    """Run our clip path for py-spy, or summarise its samples."""
    if raw:
        click.echo(summarise(raw, top))
        return
    torch.set_num_threads(1)
    run_clips(media, visits)


if __name__ == "__main__":
    main()
