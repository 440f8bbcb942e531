"""What docs/building.md promises about interrupted and repeated builds, on real ffmpeg output.

- "Ctrl-C stops the workers and removes their temporary files; the message says to run the
  command again to resume" (exit 130, docs/troubleshooting.md), and a re-run resumes.
- "Changed sources or options with an existing manifest: the build refuses to mix ("holds shards
  built from other sources or options; add --overwrite ...")", exit 2, touching nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import media_gen as gen
from avshards.cli import main
from avshards.cli_errors import Exit

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["--short-side", "64", "--clip-seconds", "4", "--videos-per-shard", "1", "--quiet"]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- Ctrl-C -----------------------------------------------------------------------------------------
@pytest.mark.slow          # 10-50 s: the build's worker processes each import torch (webdataset)
def test_ctrl_c_stops_the_workers_removes_their_temporary_files_and_a_rerun_resumes(tmp_path):
    """SIGINT to the process group of a real `avshards build` with 2 worker processes, as a
    terminal's Ctrl-C sends it: one worker waits on a source that hangs (a FIFO, like a stalled
    network mount) with its shard half-written, the other has finished its shards and waits for work.

    Kills: `build_shard` removing its ``.tar.tmp`` / ``.idx.tmp`` on ``Exception`` only (a
    KeyboardInterrupt left them; the next run's clean-up hides that from the SIGKILL test).
    """
    src = tmp_path / "src"
    src.mkdir()
    names = ["v0.mp4", "hang.mp4", "v2.mp4"]          # --no-shuffle: shard i holds names[i]
    for name in names:
        if name != "hang.mp4":
            gen.video(src / name, 1.0, size="96x72")
    gen.hanging(src / "hang.mp4")
    (tmp_path / "src.csv").write_text("".join(f"{src / n},x\n" for n in names))
    out, temp = tmp_path / "out", tmp_path / "tmp"
    temp.mkdir()
    args = ["build", "--src", str(tmp_path / "src.csv"), "--out", str(out), "--workers", "2", "--no-shuffle",
            "--timeout", "600", *OPTIONS]
    proc = subprocess.Popen([sys.executable, "-m", "avshards.cli", *args], start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(temp)})
    deadline = time.monotonic() + 300
    while not all((out / n).exists() for n in ("shards-000000.tar", "shards-000002.tar", "shards-000001.tar.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.5)                                  # the free worker is back waiting for work
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == Exit.INTERRUPTED, stderr
    assert stderr.rstrip().splitlines()[-1] == (f"Error: interrupted; run the same command again to resume "
                                                f"(finished shards in {out} are kept).")
    assert sorted(os.listdir(out)) == ["failures.jsonl.partial", "shards-000000.idx", "shards-000000.tar",
                                       "shards-000002.idx", "shards-000002.tar"]   # no .tmp, no manifest
    assert os.listdir(temp) == []                    # the workers' ffmpeg scratch folders are gone too
    finished = {n: (out / n).stat().st_mtime_ns for n in ("shards-000000.tar", "shards-000002.tar")}

    (src / "hang.mp4").unlink()                      # the mount is back: the same command again
    gen.video(src / "hang.mp4", 1.0, size="96x72")
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "built 1 shard(s), skipped 2 (already done), failed 0 of 3 video(s)" in again.output
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == finished
    assert not list(out.glob("*.tmp")) and (out / "manifest.json").exists() and (out / "shards-000001.tar").exists()
    assert "Traceback" not in stderr, stderr   # an idle worker ignores Ctrl-C (build._worker_init)


# --- a rebuild with changed sources ----------------------------------------------------------------
def change_nothing(src: Path) -> None:
    pass


def change_add(src: Path) -> None:
    gen.video(src / "a" / "three.mp4", 1.0, size="96x72")


def change_remove(src: Path) -> None:
    (src / "a" / "two.mp4").unlink()


def change_modify(src: Path) -> None:
    gen.video(src / "a" / "two.mp4", 1.5, size="96x72")     # the same name, another video (a re-download)


@pytest.mark.parametrize("change", [change_nothing, change_add, change_remove, change_modify],
                         ids=["unchanged", "add", "remove", "modify"])
def test_a_rebuild_refuses_when_the_sources_changed(tmp_path, change):
    """Kills: `_check_resumable` comparing the options alone (``keys = ("options",
    "videos_per_shard", "shuffle", "seed")``: test_build.py changes only an option), and (modify: a
    bug this test found, fixed in build.py) a check without ``sizes_digest``: the source digest
    covers each source's path and label only, so a video replaced under the same name was skipped
    as "already done" and the set mixed old and new content."""
    src, out = tmp_path / "src", tmp_path / "out"
    (src / "a").mkdir(parents=True)
    gen.video(src / "a" / "one.mp4", 1.0, size="96x72")
    gen.video(src / "a" / "two.mp4", 1.0, size="96x72")
    args = ["build", "--src", str(src), "--out", str(out), "--workers", "1", *OPTIONS]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    before = folder_bytes(out)
    change(src)
    again = CliRunner().invoke(main, args)
    if change is change_nothing:
        assert again.exit_code == 0 and "built 0 shard(s), skipped 2 (already done)" in again.output, again.output
        assert folder_bytes(out) == before
        return
    assert again.exit_code == Exit.USAGE, again.output
    assert again.output.rstrip().splitlines()[-1] == (
        f"Error: {out} holds shards built from other sources or options; add --overwrite to rebuild "
        "them, or choose another --out.")
    assert folder_bytes(out) == before                            # it touched nothing
