"""`avshards index SHARDS`: write DALI-compatible ``wds2idx`` index files beside local shards.

DALI's ``readers.webdataset`` scans every tar at start-up unless it is given ``index_paths``;
the shards written by `avshards build` already carry ``NAME.idx``, and this command adds it to
shards that lack one (copied from elsewhere, written by other tools, or built before indexing).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator

import click

from avshards.cli_errors import Exit, fail
from avshards.index import index_path, write_index
from avshards.reader import shard_urls


def local_shards(url: str) -> list[str]:
    """The local tar paths of ``url`` (folder, brace pattern or one tar); ValueError if none exist."""
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"{url} is remote; `avshards index` writes index files beside local shards, "
                         "so index a local copy and upload the .idx files next to the tars.")
    url = url.removeprefix("file://")
    paths = [url] if os.path.isfile(url) else shard_urls(url)
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or missing:
        what = missing[0] if missing else url
        raise ValueError(f"no shard found at {what}; pass a folder of .tar shards, a brace pattern "
                         "(shards-{000000..000009}.tar) or a .tar file.")
    return paths


def is_indexed(path: str) -> bool:
    """True when the tar has an index at least as new as itself (a rewritten tar needs a new one)."""
    idx = index_path(path)
    return os.path.exists(idx) and os.path.getmtime(idx) >= os.path.getmtime(path)


def index_shards(paths: list[str], overwrite: bool = False) -> Iterator[tuple[str, bool]]:
    """Write ``NAME.idx`` for each tar lacking an up-to-date one (all with ``overwrite``); yield
    (tar, written)."""
    for path in paths:
        if not overwrite and is_indexed(path):
            yield path, False
        else:
            try:
                write_index(path)
            except (tarfile.TarError, EOFError) as e:
                why = str(e).splitlines()[0].rstrip(":")   # tarfile lists every compression it tried
                raise ValueError(f"{path} is not a readable tar ({why}); rebuild or re-download that shard.") from None
            yield path, True


@click.command("index")
@click.argument("shards", nargs=-1, required=True)
@click.option("--overwrite", is_flag=True, help="Rewrite index files that already exist.")
def index_command(shards: tuple[str, ...], overwrite: bool) -> None:
    """Write a DALI wds2idx index (NAME.idx) beside every shard that lacks one (or whose index
    is older than the shard).

    SHARDS: folders of shards, brace patterns or .tar files (local).

    \b
    Example:
      avshards index downloaded-shards/ --overwrite
    """
    from tqdm import tqdm

    try:
        paths = [p for url in shards for p in local_shards(url)]
    except ValueError as e:
        fail(str(e), Exit.USAGE)
    written = skipped = 0
    try:
        for _, did in tqdm(index_shards(paths, overwrite), total=len(paths), unit="shard", disable=None):
            written += did
            skipped += not did
    except ValueError as e:
        fail(str(e), Exit.BAD_DATA)
    note = " (already indexed; --overwrite rewrites them)" if skipped else ""
    click.echo(f"indexed {written} shard(s), skipped {skipped}{note}")
