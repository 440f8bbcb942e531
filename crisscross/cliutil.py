"""Small pieces the click commands of crisscross share: the device default, option bundles, and how
a command ends: every user error as one sentence with the exit codes of :mod:`avshards.cli_errors`
(0 done, 1 bad data, 2 fix the command or its input, 3 a server did not answer, 130 interrupted).

Nothing here imports torch, so ``crisscross --help`` answers at once; the exceptions of heavy
modules are recognised through ``sys.modules`` (an exception of a module never imported cannot have
been raised).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from avshards.cli_errors import Exit, fail
from avshards.cli_errors import report as report_avshards_error

# click's own endings: usage errors (exit 2), --help, sys.exit.
CLICK_ENDINGS = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit)
# Errors whose message is the sentence a user needs, by exit code (module, class name).
BAD_DATA = (("avshards.stream", "LostClipsError"), ("crisscross.train", "EmptyEpoch"))
UNREACHABLE = (("avshards.remote", "TransientError"),)
USAGE = (("crisscross.monitor", "TrainingDiverged"), ("crisscross.eval.errors", "EvalError"),
         ("crisscross.viz", "VizError"))
# The plain types our own checks raise with a sentence (exactly these: a library's subclass, e.g.
# json.JSONDecodeError, is a bug to show with its traceback).
USAGE_TYPES = (ValueError, ImportError, FileNotFoundError)


def default_device() -> str:
    """cuda when available, else cpu (a click default: asked when a command runs, not at import)."""
    import torch    # here: a light import of the CLI

    return "cuda" if torch.cuda.is_available() else "cpu"


def options(*decorators: Callable) -> Callable:
    """One decorator applying several click options, listed in the order --help shows them."""
    def apply(f: Callable) -> Callable:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


def _raised(err: BaseException, kinds: tuple[tuple[str, str], ...]) -> bool:
    return any(module in sys.modules and isinstance(err, getattr(sys.modules[module], name))
               for module, name in kinds)


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is torch's CUDA out-of-memory error."""
    return "torch" in sys.modules and isinstance(err, sys.modules["torch"].cuda.OutOfMemoryError)


def report(err: BaseException) -> NoReturn:
    """End a crisscross command for an exception a user can cause; re-raise anything else (a bug).

    Lost clips are bad data (1); a server that did not answer is 3, also when the stream's start-up
    put it in a sentence of its own; divergence, a bad option or file, a missing optional package and
    a GPU too small for the batch are fixed in the command (2); the rest as avshards ends them
    (unreachable servers 3, Ctrl-C 130, ...)."""
    if _raised(err, BAD_DATA):
        fail(str(err), Exit.BAD_DATA)
    if isinstance(err, OSError) and _raised(err.__context__, UNREACHABLE):
        # the stream's start-up sentence for a server that kept failing (raised from its TransientError)
        fail(str(err), Exit.UNREACHABLE)
    if out_of_memory(err):
        fail("the GPU ran out of memory; lower --batch-size, or keep it and raise --accumulate "
             "(micro-batches per optimiser step).", Exit.USAGE)
    if _raised(err, USAGE) or type(err) in USAGE_TYPES:
        fail(str(err), Exit.USAGE)
    report_avshards_error(err)


def _invoke(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    try:
        return invoke(ctx)
    except CLICK_ENDINGS:
        raise
    except (Exception, KeyboardInterrupt) as err:
        report(err)


class Command(click.Command):
    """A click command that ends every user error through :func:`report` (also when it runs on its
    own, outside the ``crisscross`` group: the demo and the tests call commands directly)."""

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke(super().invoke, ctx)


class Group(click.Group):
    """A click group whose commands end every user error through :func:`report`."""

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke(super().invoke, ctx)


def check_device(ctx, param, value: str) -> str:
    """A click callback: ``value`` must name a torch device that exists here (one clear line if not)."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise click.BadParameter(f"{value!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(f"{value!r}: no CUDA device is available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise click.BadParameter(f"{value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return value
