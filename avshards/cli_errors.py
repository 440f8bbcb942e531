"""How every `avshards` command ends: one table of exit codes, and each user error as one sentence.

The codes (docs/troubleshooting.md#exit-codes says the same to users):

====  ==============  ==========================================================================
0     OK              done
1     BAD_DATA        the input was read and is bad: verify found problems, a shard is damaged,
                      no clip could be built from any source
2     USAGE           the command must change: a bad option (click's own errors use 2 too), a path
                      or URL that is missing or of the wrong kind, no access, a missing program
3     UNREACHABLE     a server or endpoint did not answer, even after retries: the same command
                      may work later
130   INTERRUPTED     Ctrl-C
====  ==============  ==========================================================================

:class:`CommandGroup` applies the table to every command it holds, so a new command cannot forget it.
"""

from __future__ import annotations

import enum
import sys
import tarfile
from typing import NoReturn

import click

from avshards import remote
from avshards.errors import BuildError
from avshards.datasets import DatasetError
from avshards.format import SchemaError
from avshards.reader import TruncatedShardError
from avshards.sources import SourceError
from avshards.transcode import MissingFFmpeg


class Exit(enum.IntEnum):
    """The exit codes of the avshards commands (see the module docstring)."""

    OK = 0
    BAD_DATA = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


# Exceptions whose message is already the one sentence a user needs, by exit code.
USAGE_ERRORS = (remote.ShardAccessError, SourceError, BuildError, DatasetError, SchemaError, MissingFFmpeg)
BAD_DATA_ERRORS = (TruncatedShardError, tarfile.TarError)


def fail(message: str, code: Exit = Exit.USAGE) -> NoReturn:
    """A user error: ``Error: <message>`` on stderr, no traceback, exit ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(int(code))


def unreachable_message(err: remote.TransientError) -> str:
    """The sentence for a server that kept failing: what failed, and that a re-run may work."""
    return (f"{err} (gave up after {remote.RETRIES} retries); check that the server / endpoint is up, "
            "then run the same command again.")


def report(err: BaseException) -> NoReturn:
    """End the command for an exception a user can cause; re-raise anything else (a bug)."""
    if isinstance(err, KeyboardInterrupt):
        fail("interrupted.", Exit.INTERRUPTED)
    if isinstance(err, remote.TransientError):
        fail(unreachable_message(err), Exit.UNREACHABLE)
    if isinstance(err, USAGE_ERRORS):
        fail(str(err), Exit.USAGE)
    if isinstance(err, BAD_DATA_ERRORS):
        fail(str(err), Exit.BAD_DATA)
    if isinstance(err, OSError) and err.filename:   # permissions, a file where a folder should be, ...
        fail(f"cannot use {err.filename}: {err.strerror}; check the path and its permissions.", Exit.USAGE)
    raise err


class CommandGroup(click.Group):
    """A click group whose commands end every user error through :func:`report`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise                  # click's own usage errors (exit 2), --help, sys.exit
        except (Exception, KeyboardInterrupt) as err:
            report(err)
