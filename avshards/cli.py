"""The `avshards` command: build, inspect, verify, preview, stream and index audio-visual shards."""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crisscross-av")
def main() -> None:
    """Audio-visual WebDataset shards: 16 fps JPEG frames + 16 kHz mono audio per clip.

    \b
    Typical use:
      avshards build --src kinetics/ --out shards/     transcode a video folder once
      avshards inspect shards/                          what is in it
      avshards preview shards/ --out preview.png        look at it
    """


# Commands are registered explicitly, one line each, below.
from avshards.indexing import index_command  # noqa: E402
main.add_command(index_command)
