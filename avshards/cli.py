"""The `avshards` command: build, inspect, verify, preview, index, upload and list audio-visual shards.

Importing this module loads neither torch nor webdataset (the commands import what they need), so
``avshards --help`` and ``avshards ls`` answer at once. Every command ends a user error with one
sentence and the exit code of :mod:`avshards.cli_errors`.
"""

import logging
import sys

import click

from avshards.cli_errors import CommandGroup, Exit, fail


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crisscross-av")
@click.option("-v", "--verbose", count=True, help="Log what the commands do: -v the details (INFO), -vv debugging.")
def main(verbose: int) -> None:
    """Audio-visual WebDataset shards: 16 fps JPEG frames + 16 kHz mono audio per clip.

    \b
    Typical use:
      avshards build --src kinetics/ --out shards/     transcode a video folder once
      avshards inspect shards/                          what is in it
      avshards preview shards/ --out preview.png        look at it
      avshards -v ls s3://bucket/k400/                  the same with details logged

    Exit codes: 0 done, 1 bad data, 2 fix the command or its inputs, 3 a server did not answer
    (run again later), 130 interrupted (docs/troubleshooting.md).
    """
    configure_logging(verbose)


class _Stderr(logging.StreamHandler):
    """A handler writing to the ``sys.stderr`` of the moment (click's test runner swaps it)."""

    avshards_cli = True

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:
        pass


def configure_logging(verbose: int) -> None:
    """Send the ``avshards`` loggers to stderr: warnings always, INFO with -v, DEBUG with -vv."""
    logger = logging.getLogger("avshards")
    for handler in [h for h in logger.handlers if getattr(h, "avshards_cli", False)]:
        logger.removeHandler(handler)     # one handler, however often main() runs in one process
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)
    logger.addHandler(handler)
    if verbose:
        logger.setLevel(handler.level)


# build / inspect / verify / preview ------------------------------------------------------------
@main.command("build")
@click.option("--src", required=True, help="Videos: a folder (class folders = labels), a Kinetics or "
              "path,label[,start,end] CSV, a list file, or a quoted glob.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder (or s3://bucket/prefix/) "
              "for the shards, their .idx files, manifest.json and failures.jsonl.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Folder that relative paths in a CSV/list (and Kinetics ids) resolve against "
                   "[default: the CSV's folder].")
@click.option("--short-side", default=128, show_default=True, help="Frame short side in pixels (even).")
@click.option("--quality", default=5, show_default=True, help="JPEG quality as ffmpeg -q:v: 2 best .. 31 worst.")
@click.option("--clip-seconds", default=10.0, show_default=True,
              help="Longer sources are cut into consecutive clips of at most this length.")
@click.option("--videos-per-shard", default=256, show_default=True,
              help="Videos per shard (one shard = one unit of parallel, resumable work).")
@click.option("--workers", default=None, type=int, help="Worker processes [default: all cores].")
@click.option("--timeout", default=600.0, show_default=True,
              help="Seconds allowed per video for ffprobe and for ffmpeg; a hung file fails.")
@click.option("--overwrite", is_flag=True, help="Rebuild shards that already exist instead of skipping them.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--dataset", type=click.Choice(["ucf101", "hmdb51", "esc50", "dcase2014", "kinetics-sound"]),
              default=None, help="Read --src as this downstream dataset's own layout and split files "
              "(labels + train/test split in every clip's json; see avshards.datasets).")
@click.option("--split", default=1, show_default=True,
              help="With --dataset: the split (UCF101/HMDB51 1-3) or test fold (ESC-50/DCASE2014 1-5).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: one Ray task per shard (pip install "
                   "'crisscross-av[ray]').")
@click.option("--ray-address", default=None, help="With --engine ray: the cluster (auto, HOST:6379 or "
              "ray://HOST:10001) [default: start a local Ray instance].")
@click.option("--staging", type=click.Path(file_okay=False), default=None,
              help="With --out s3://...: local folder where shards are written before upload "
                   "[default: one under the system's temporary folder, named after the URL].")
@click.option("--shuffle/--no-shuffle", default=True, show_default=True,
              help="Write the videos in a seeded random order, so shards mix classes (--no-shuffle: source "
                   "order, i.e. one class folder after the other).")
@click.option("--seed", default=0, show_default=True, help="Seed of the --shuffle order.")
def build_command(src, out, root, short_side, quality, clip_seconds, videos_per_shard, workers, timeout,
                  overwrite, quiet, dataset, split, engine, ray_address, staging, shuffle, seed) -> None:
    """Transcode videos into shards: 16 fps JPEG frames + 16 kHz mono audio per clip.

    A killed build, run again, skips the finished shards; failing videos are listed in
    failures.jsonl and the build goes on. Exits non-zero only when nothing could be built.

    \b
    Example:
      avshards build --src kinetics400/train/ --out shards/k400-train/ --workers 16
    """
    from avshards.build import build
    from avshards.datasets import dataset_items
    from avshards.sources import describe_source

    if dataset:
        src = dataset_items(dataset, src, split)
    else:
        click.echo(f"reading --src {src} as {describe_source(src)}", err=True)
    try:
        report = build(src, out, root=root, short_side=short_side, quality=quality, clip_seconds=clip_seconds,
                       videos_per_shard=videos_per_shard, workers=workers, timeout=timeout,
                       overwrite=overwrite, progress=not quiet, engine=engine, ray_address=ray_address,
                       staging=staging, shuffle=shuffle, seed=seed)
    except KeyboardInterrupt:
        fail(f"interrupted; run the same command again to resume (finished shards in {out} are kept).",
             Exit.INTERRUPTED)
    for failure in report.failures[:10]:
        click.echo(f"failed: {failure['source']}: {failure['reason']}", err=True)
    if report.num_failed > 10:
        click.echo(f"... {report.num_failed - 10} more in {out}/failures.jsonl", err=True)
    click.echo(report.summary())
    if report.num_samples == 0:
        fail(f"no clip could be built from {src}; see the reasons above.", Exit.BAD_DATA)


@main.command("inspect")
@click.argument("shards")
def inspect_command(shards) -> None:
    """Summarise SHARDS (a folder, brace pattern or URL): clips, hours, labels, audio share, size,
    and how the clips are ordered (a set sorted by label makes batches of one class).

    On http(s):// and s3:// it reads the manifest and the .idx files, never the shards themselves.

    \b
    Example:
      avshards inspect s3://bucket/k400/
    """
    from avshards.inspect import order_report, summarize

    _require_shards(shards)
    click.echo(summarize(shards).table())
    order = order_report(shards)
    click.echo(order.summary())
    if order.advice:
        click.echo(f"warning: {order.advice}", err=True)


@main.command("verify")
@click.argument("shards")
def verify_command(shards) -> None:
    """Decode every frame and audio sample in SHARDS and check each json against its content.

    \b
    Example:
      avshards verify shards/k400-train/
    """
    from avshards.inspect import verify

    _require_shards(shards)
    problems = 0
    for where, problem in verify(shards):
        problems += 1
        click.echo(f"{where}: {problem}")
    if problems:
        fail(f"{problems} problem(s) found in {shards}.", Exit.BAD_DATA)
    click.echo(f"ok: every clip in {shards} decodes and matches its json")


@main.command("preview")
@click.argument("shards")
@click.option("--out", default="preview.png", show_default=True, help="PNG file to write.")
@click.option("--clips", default=4, show_default=True, help="Clips (rows) to show.")
@click.option("--frames", default=6, show_default=True, help="Frames per row, evenly spaced over the clip.")
def preview_command(shards, out, clips, frames) -> None:
    """Write a contact sheet of SHARDS: frames and a log-mel image for the first few clips.

    \b
    Example:
      avshards preview shards/k400-train/ --out preview.png --clips 8
    """
    from avshards.inspect import preview

    _require_shards(shards)
    click.echo(f"wrote {preview(shards, out, clips=clips, frames=frames)}")


def _require_shards(url: str) -> None:
    """Stop with one sentence when a local ``url`` holds no shards (remote problems raise their own)."""
    from avshards import remote
    from avshards.reader import shard_urls

    urls = shard_urls(url)
    if not urls or (remote.scheme_of(url) == "file" and not all(remote.exists(u) for u in urls)):
        fail(f"{url} has no shards; give the --out folder of `avshards build`.")


# Commands are registered explicitly, one line each, below.
from avshards.index_cli import index_command  # noqa: E402
main.add_command(index_command)
from avshards.stream_cli import ls_command, upload_command  # noqa: E402
main.add_command(upload_command)
main.add_command(ls_command)


if __name__ == "__main__":   # python -m avshards.cli (e.g. under torchrun -m)
    main()
