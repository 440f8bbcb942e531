"""The `crisscross` command: train, evaluate, export and look at CrissCross models."""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crisscross-av")
def main() -> None:
    """CrissCross: audio-visual self-supervised learning from avshards shards.

    \b
    Typical use:
      crisscross train shards/ --preset tiny-cpu --out runs/tiny
      crisscross eval linear runs/tiny/checkpoint.pt esc50-shards/
    """


# Commands are registered explicitly, one line each, below.
from crisscross.eval.cli import eval_group  # noqa: E402
main.add_command(eval_group)
from crisscross.viz.cli import viz_group  # noqa: E402
main.add_command(viz_group)
from crisscross.demo import demo_command  # noqa: E402
main.add_command(demo_command)
from crisscross.train_cli import train_command  # noqa: E402
main.add_command(train_command)
from crisscross.export import export_command  # noqa: E402
main.add_command(export_command)


if __name__ == "__main__":   # python -m crisscross.cli (e.g. under torchrun -m)
    main()
