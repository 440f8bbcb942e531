"""The `crisscross` command: train, evaluate, export and look at CrissCross models.

Importing this module loads neither torch nor webdataset (each command imports what it needs when
it runs), so ``crisscross --help`` and every ``--help`` answer at once. Every command ends a user
error with one sentence and the exit codes of :mod:`avshards.cli_errors` (:mod:`crisscross.cliutil`).
"""

import click

from avshards.cli import configure_logging
from crisscross.cliutil import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crisscross-av")
@click.option("-v", "--verbose", count=True,
              help="Log what the commands do (e.g. the stream's per-epoch counts): -v INFO, -vv debugging.")
def main(verbose: int) -> None:
    """CrissCross: audio-visual self-supervised learning from avshards shards.

    \b
    Examples:
      crisscross train shards/ --preset tiny-cpu --out runs/tiny
      crisscross eval linear runs/tiny/checkpoint.pt esc50-shards/
      crisscross -v train shards/ --out runs/tiny --resume auto     # with the data's counts logged

    Exit codes: 0 done, 1 bad data (e.g. too many clips lost to unreadable shards), 2 fix the
    command or its inputs, 3 a server did not answer (run again later), 130 interrupted
    (docs/troubleshooting.md).
    """
    configure_logging(verbose, ("avshards", "crisscross"))


# Commands are registered explicitly, one line each, below.
from crisscross.eval.cli import eval_group  # noqa: E402
main.add_command(eval_group)
from crisscross.viz.cli import viz_group  # noqa: E402
main.add_command(viz_group)
from crisscross.demo import demo_command  # noqa: E402
main.add_command(demo_command)
from crisscross.train_cli import train_command  # noqa: E402
main.add_command(train_command)
from crisscross.export_cli import export_command  # noqa: E402
main.add_command(export_command)


if __name__ == "__main__":   # python -m crisscross.cli (e.g. under torchrun -m)
    main()
