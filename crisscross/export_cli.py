"""`crisscross export`: the two pretrained backbones of a checkpoint as safetensors
(:func:`crisscross.export.export_backbones`, imported when the command runs)."""

from __future__ import annotations

import click

from crisscross.cliutil import Command


@click.command("export", cls=Command)
@click.argument("checkpoint")
@click.option("--out", required=True, help="Folder to write video_backbone.safetensors, "
                                           "audio_backbone.safetensors and backbones.json into.")
def export_command(checkpoint: str, out: str) -> None:
    """Write the two pretrained backbones of CHECKPOINT (a checkpoint.pt or a run folder) alone,
    as safetensors, for downstream use.

    \b
    Example:
      crisscross export runs/tiny/checkpoint.pt --out runs/tiny/backbones
    \b
    Load them in Python:
      from crisscross.export import load_backbones
      video, audio = load_backbones("runs/tiny/backbones", pool="max")
    """
    from crisscross.export import export_backbones, read_info

    folder = export_backbones(checkpoint, out)
    info = read_info(folder)
    click.echo(f"exported step {info['step']}: video backbone ({info['video']['num_params']:,} parameters) "
               f"and audio backbone ({info['audio']['num_params']:,}) to {folder}")
