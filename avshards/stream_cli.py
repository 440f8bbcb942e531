"""`avshards upload` and `avshards ls`: put shards in an object store, and see what a URL holds."""

from __future__ import annotations

import click

from avshards import remote
from avshards.cli_errors import Exit, fail


@click.command("upload")
@click.argument("shards", type=click.Path())
@click.argument("dest")
@click.option("--overwrite", is_flag=True, help="Upload every file, even those already there with the same size.")
@click.option("--quiet", is_flag=True, help="Only the summary line.")
def upload_command(shards: str, dest: str, overwrite: bool, quiet: bool) -> None:
    """Upload a shard folder (tars, .idx files, manifest.json last) to DEST, s3://bucket/prefix/.

    Objects already there with the same size are skipped, so a re-run sends only what is missing.
    Credentials and endpoint come from the usual AWS_* variables (AWS_ENDPOINT_URL for
    S3-compatible stores).

    \b
    Example:
      avshards upload shards/k400-train/ s3://bucket/k400-train/
    """
    if not dest.startswith("s3://"):
        fail(f"{dest} is not an s3:// URL; give s3://bucket/prefix/.")

    def show(url: str, skipped: bool) -> None:
        if not quiet:
            click.echo(f"{'skipped' if skipped else 'uploaded'} {url}")

    try:
        uploaded, skipped = remote.upload(shards, dest, skip_existing=not overwrite, progress=show)
    except remote.TransientError as err:
        fail(f"the upload to {dest} failed after retries ({err}); run the same command again to resume.",
             Exit.UNREACHABLE)
    click.echo(f"{len(uploaded)} file(s) uploaded, {len(skipped)} already there, to {dest}")


@click.command("ls")
@click.argument("url")
def ls_command(url: str) -> None:
    """List the shards at URL (folder, brace pattern, http(s)://, s3://, gs://, az://, hf://) with
    their sample counts, from the manifest or the .idx files.

    \b
    Example:
      avshards ls https://data.example.org/k400/
    """
    from avshards.reader import list_shards

    shards = list_shards(url)
    for shard in shards:
        click.echo(f"{shard.num_samples:8d}  {shard.url}")
    click.echo(f"{len(shards)} shard(s), {sum(s.num_samples for s in shards)} sample(s)")
