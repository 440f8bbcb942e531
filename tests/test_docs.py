"""The documentation cannot rot: every command it shows exists, with the options it uses.

Each ``avshards ...`` / ``crisscross ...`` line in a fenced shell block of README.md and docs/*.md
(also ``torchrun ... -m crisscross.cli ...``, ``python -m avshards.cli ...`` and lines continued with
a trailing backslash) is split with shlex and walked through the real click command tree: the
subcommand path must exist, every ``--option`` must belong to that command, Choice and number values
must be accepted, and the positional arguments must fit. ``make TARGET`` lines must name a Makefile
target. Relative links between the docs must point at files that exist. Import-only: nothing runs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}   # unlabeled blocks hold commands too
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;"}
KEYWORDS = {"do", "then", "else", "time", "sudo", "env", "exec", "nohup", "!", "$"}
REDIRECTS = {">", ">>", "<", "2>", "&>", "2>&1", ">&"}
SHELL_EXPANSION = re.compile(r"[$*?{}\[\]<>]")    # a value the shell fills in: not checkable here


def _programs() -> dict[str, click.Command]:
    from avshards.cli import main as avshards_main
    from crisscross.cli import main as crisscross_main

    return {"avshards": avshards_main, "crisscross": crisscross_main}


# --- finding the commands -------------------------------------------------------------------------
def fenced_shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, logical line) inside shell-like fenced blocks, continuations joined."""
    lang, pending, start = None, "", 0
    for n, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*```\s*([\w+-]*)", line)
        if fence:
            lang = fence.group(1).lower() if lang is None else None
            continue
        if lang not in SHELL_LANGS:
            continue
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def split_shell(line: str) -> list[list[str]]:
    """The simple commands of one shell line (separators, keywords, redirections and prompts removed)."""
    lexer = shlex.shlex(line.strip(), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:          # unbalanced quotes: not a command line (an output sample, a template)
        return []
    commands, current, skip_next = [], [], False
    for tok in tokens:
        if skip_next:
            skip_next = False
        elif tok in SEPARATORS:
            commands.append(current)
            current = []
        elif tok in REDIRECTS:
            skip_next = tok != "2>&1"
        elif not current and (tok in KEYWORDS or re.fullmatch(r"[A-Za-z_]\w*=.*", tok)):
            continue            # `do`, `$ ` prompts, `VAR=value` prefixes
        else:
            current.append(tok)
    return [c for c in commands + [current] if c]


def invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """("avshards" | "crisscross", arguments) when ``words`` runs one of our CLIs, else None."""
    name = Path(words[0]).name
    if name in ("avshards", "crisscross") and not words[0].endswith("/"):   # not the `avshards/` folder
        return name, words[1:]
    if "-m" in words[:-1]:          # torchrun ... -m crisscross.cli, python -m avshards.cli
        i = words.index("-m")
        prog = words[i + 1].removesuffix(".cli")
        if prog in ("avshards", "crisscross"):
            return prog, words[i + 2:]
    return None


# --- checking one against the click tree ----------------------------------------------------------
def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {o: p for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def _check_value(param: click.Parameter, value: str) -> str | None:
    if SHELL_EXPANSION.search(value):
        return None
    checkable = isinstance(param.type, (click.Choice, click.types.IntParamType, click.types.FloatParamType,
                                        click.types.BoolParamType))
    if not checkable:
        return None
    try:
        param.type.convert(value, param, None)
    except click.BadParameter as err:
        return f"{param.opts[0]} {value!r}: {err.format_message()}"
    return None


def check_invocation(prog: str, args: list[str], programs: dict[str, click.Command]) -> list[str]:
    """Problems with ``prog args`` against the real command tree (empty when it would parse)."""
    command, path, positional, seen = programs[prog], [prog], [], set()
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok in ("-h", "--help"):
            return []
        if tok.startswith("-") and len(tok) > 1 and tok != "--":
            name, _, inline = tok.partition("=")
            param = _options(command).get(name)
            if param is None:
                return [f"`{' '.join(path)}` has no option {name}"]
            seen.add(param.name)
            if param.is_flag or param.count:
                continue
            values = [inline] if inline else args[i:i + param.nargs]
            i += 0 if inline else param.nargs
            for value in values:
                problem = _check_value(param, value)
                if problem:
                    return [f"`{' '.join(path)}`: {problem}"]
        elif isinstance(command, click.Group):
            if tok not in command.commands:
                return [f"`{' '.join(path)}` has no command {tok!r} (it has: {', '.join(command.commands)})"]
            command = command.commands[tok]
            path.append(tok)
        else:
            positional.append(tok)
    return _check_arity(command, path, positional, seen)


def _check_arity(command: click.Command, path: list[str], positional: list[str], seen: set) -> list[str]:
    if isinstance(command, click.Group):
        return [f"`{' '.join(path)}` needs a command ({', '.join(command.commands)})"]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    needed = sum(p.nargs for p in arguments if p.required and p.nargs > 0)
    needed += sum(1 for p in arguments if p.required and p.nargs == -1)
    most = None if any(p.nargs == -1 for p in arguments) else sum(p.nargs for p in arguments)
    where = f"`{' '.join(path)}`"
    if most is not None and len(positional) > most:
        return [f"{where} takes {most} argument(s) ({', '.join(p.name.upper() for p in arguments)}), "
                f"got {len(positional)}: {positional}"]
    if len(positional) < needed:
        return [f"{where} needs {needed} argument(s) ({', '.join(p.name.upper() for p in arguments)}), "
                f"got {len(positional)}"]
    missing = [p.opts[0] for p in command.params
               if isinstance(p, click.Option) and p.required and p.name not in seen]
    return [f"{where} needs {', '.join(missing)}"] if missing else []


def _shown(doc: Path) -> str:
    return str(doc.relative_to(REPO)) if doc.is_relative_to(REPO) else doc.name


def make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text() if (REPO / "Makefile").exists() else ""
    return set(re.findall(r"^([\w.-]+)\s*:(?!=)", makefile, flags=re.M))


def doc_problems(doc: Path, programs: dict[str, click.Command]) -> list[str]:
    """Every wrong command in ``doc``, as 'FILE:LINE: `command`: problem'."""
    problems = []
    rel = _shown(doc)
    for n, line in fenced_shell_lines(doc.read_text(encoding="utf-8")):
        for words in split_shell(line):
            if words[0] == "make" and len(words) > 1 and not words[1].startswith("-"):
                if words[1] not in make_targets():
                    problems.append(f"{rel}:{n}: `{line.strip()}`: the Makefile has no target {words[1]!r}")
                continue
            found = invocation(words)
            if found:
                problems += [f"{rel}:{n}: `{line.strip()}`: {p}"
                             for p in check_invocation(*found, programs)]
    return problems


# --- links ----------------------------------------------------------------------------------------
LINK = re.compile(r"\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def prose(text: str) -> Iterator[tuple[int, str]]:
    """Lines outside fenced blocks (links in code samples are not links)."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"\s*```", line):
            fenced = not fenced
        elif not fenced:
            yield n, line


def broken_links(doc: Path) -> list[str]:
    """Relative links in ``doc`` whose target file does not exist, as 'FILE:LINE: target'."""
    out = []
    for n, line in prose(doc.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue        # http(s)://, mailto:, in-page anchors
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists():
                out.append(f"{_shown(doc)}:{n}: link to {target} (no such file)")
    return out


# --- tests ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def programs() -> dict[str, click.Command]:
    return _programs()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_doc_commands_exist(doc, programs):
    problems = doc_problems(doc, programs)
    assert not problems, "documented commands that do not parse:\n" + "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_doc_links_resolve(doc):
    problems = broken_links(doc)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_are_found():
    """The scan sees the docs and the commands in them (an empty scan would pass everything)."""
    names = {p.name for p in DOCS}
    assert {"README.md", "datasets.md", "troubleshooting.md"} <= names
    found = [words for doc in DOCS for _, line in fenced_shell_lines(doc.read_text()) for words in split_shell(line)
             if invocation(words)]
    assert len(found) >= 20


def test_checker_catches_rot(programs, tmp_path):
    """A removed command, an unknown option, a bad choice or a stray argument fails, with the line."""
    doc = tmp_path / "_rot_probe.md"
    bad = ("```bash\n"
           "avshards build --src v/ --out s/ --no-such-option 3\n"
           "avshards bild --src v/ --out s/\n"
           "crisscross eval linear ck.pt shards/ \\\n  --modality smell\n"
           "avshards inspect a/ b/\n"
           "torchrun --nproc-per-node 2 -m crisscross.cli evaluate x\n"
           "avshards build --out s/\n"
           "```\n"
           "```\navshards build --src v/ --out s/ --engine local   # fine\n```\n")
    doc.write_text(bad)
    problems = doc_problems(doc, programs)
    assert len(problems) == 6, problems
    assert problems[0].startswith("_rot_probe.md:2:") and "--no-such-option" in problems[0]
    assert "no command 'bild'" in problems[1]
    assert problems[2].startswith("_rot_probe.md:4:") and "smell" in problems[2]
    assert "takes 1 argument" in problems[3]
    assert "no command 'evaluate'" in problems[4]
    assert "needs --src" in problems[5]
