"""Every file under --src accounted for, and `avshards inspect` on real labelled media: the clip
order (sorted by label or mixed) and a remote set read by its manifest and indexes only."""

from __future__ import annotations

import inspect as pyinspect
import json
import os
import random
import subprocess
import threading
from http.server import ThreadingHTTPServer

import pytest
from click.testing import CliRunner

import avshards
from avshards.cli import main
from avshards.inspect import order_report, summarize
from servers import RangeHandler, reset_faults

CLASSES = ("coin", "hit", "jump", "laser")      # five recordings each in the real arcade sounds
# The build's own order is what the first set must keep: turn off the shuffle where the build has one.
IN_GIVEN_ORDER = {"shuffle": False} if "shuffle" in pyinspect.signature(avshards.build).parameters else {}


def convert(src, dst, *codec: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *codec, str(dst)], check=True)


def test_every_file_under_src_is_built_failed_or_skipped_by_extension(media, tmp_path):
    """Real recordings as .aiff / .aif / .wma / .mka beside text files: nothing vanishes silently."""
    src = tmp_path / "drums"
    (src / "kick").mkdir(parents=True)
    (src / "snare").mkdir()
    sounds = media / "audio" / "arcade_sfx"
    convert(sounds / "coin1.wav", src / "kick" / "coin1.aiff")
    convert(sounds / "coin2.wav", src / "kick" / "coin2.aif", "-c:a", "pcm_s16be", "-f", "aiff")
    convert(sounds / "laser1.wav", src / "snare" / "laser1.wma", "-c:a", "wmav2")
    convert(sounds / "laser2.wav", src / "snare" / "laser2.mka")
    (src / "notes.txt").write_text("recorded at the studio\n")
    (src / "snare" / "README.md").write_text("# snare\n")
    (src / "snare" / "take3.xyz").write_text("not a sound at all\n")   # unknown extension: ffprobe decides
    (src / "kick" / "LICENSE").write_text("CC0\n")
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    on_disk = sum(len(files) for _, _, files in os.walk(src))

    result = CliRunner().invoke(main, ["build", "--src", str(src), "--out", str(tmp_path / "out"), "--workers", "1",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert "reading --src" in result.output and "as a folder" in result.output
    assert "skipped 3 file(s) by extension ((hidden) 1, .md 1, .txt 1) in --src" in result.output

    clips = list(avshards.open_shards(str(tmp_path / "out")))
    built = {os.path.basename(c.meta["source"]) for c in clips}
    assert built == {"coin1.aiff", "coin2.aif", "laser1.wma", "laser2.mka"}
    assert all(c.has_audio and c.num_samples > 1000 for c in clips)
    assert {c.label for c in clips} == {"kick", "snare"}
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(f["source"]) for f in failures) == ["LICENSE", "take3.xyz"]
    assert all(f["reason"].startswith("not a readable media file") for f in failures)
    assert len(built) + len(failures) + 3 == on_disk


@pytest.fixture(scope="module")
def labelled(media, tmp_path_factory):
    """Five real recordings in each of four class folders; a CSV of the same in a shuffled order."""
    root = tmp_path_factory.mktemp("labelled")
    rows = []
    for label in CLASSES:
        (root / "src" / label).mkdir(parents=True)
        for n in range(1, 6):
            (root / "src" / label / f"{label}{n}.wav").symlink_to(media / "audio" / "arcade_sfx" / f"{label}{n}.wav")
            rows.append(f"src/{label}/{label}{n}.wav,{label}")
    random.Random(0).shuffle(rows)
    (root / "shuffled.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def class_sorted(labelled):
    out = labelled / "sorted"
    avshards.build(labelled / "src", out, videos_per_shard=10, workers=2, progress=False, **IN_GIVEN_ORDER)
    return out


@pytest.fixture(scope="module")
def mixed(labelled):
    out = labelled / "mixed"
    avshards.build(labelled / "shuffled.csv", out, videos_per_shard=10, workers=2, progress=False, **IN_GIVEN_ORDER)
    return out


def test_order_report_tells_a_class_sorted_set_from_a_mixed_one(class_sorted, mixed):
    sorted_report, mixed_report = order_report(str(class_sorted)), order_report(str(mixed))
    assert sorted_report.clips == mixed_report.clips == 20 and sorted_report.pairs == 18
    # Sorted: inside a shard of 10, two runs of five -> 8 of 9 neighbours alike; a random order of
    # four equal classes gives 4 * 5 * 4 / (20 * 19).
    assert sorted_report.same_label == pytest.approx(16 / 18)
    assert sorted_report.random_label == pytest.approx(80 / 380)
    assert sorted_report.sorted_by_label and "rebuild the set" in sorted_report.advice
    assert not mixed_report.sorted_by_label and mixed_report.advice is None
    assert mixed_report.label_clustering < 0.3 < 0.8 < sorted_report.label_clustering
    assert sorted_report.same_source == 0.0        # one clip per recording: no source repeats

    loud = CliRunner().invoke(main, ["inspect", str(class_sorted)])
    assert loud.exit_code == 0 and "order: sorted by label: 89% of neighbouring clips share a label" in loud.output
    assert "warning: " in loud.output and "are sorted by label" in loud.output
    calm = CliRunner().invoke(main, ["inspect", str(mixed)])
    assert calm.exit_code == 0 and "order: mixed" in calm.output and "warning" not in calm.output


class RecordingHandler(RangeHandler):
    """The Range-capable test handler, recording (method, path, Range) of every request."""

    def send_head(self):
        self.server.log.append((self.command, self.path, self.headers.get("Range")))
        return super().send_head()


def serve(folder):
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 lambda *a, **kw: RecordingHandler(*a, directory=str(folder), **kw))
    reset_faults(server).log = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_remote_inspect_reads_manifest_and_indexes_only(class_sorted, tmp_path):
    server, url = serve(class_sorted)
    try:
        local = CliRunner().invoke(main, ["inspect", str(class_sorted)]).output
        result = CliRunner().invoke(main, ["inspect", url + "/"])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[:3] == local.splitlines()[:3]          # same table, real sizes
        assert result.output.splitlines()[3] == local.splitlines()[3]            # same order report
        size = sum(os.path.getsize(p) for p in class_sorted.glob("*.tar"))
        assert summarize(url + "/").num_bytes == size > 0
        tar_reads = [r for _, p, r in server.log if p.endswith(".tar")]
        assert tar_reads and all(r is not None for r in tar_reads)               # never a whole shard ...
        spans = [int(b) - int(a) + 1 for a, b in (r.removeprefix("bytes=").split("-") for r in tar_reads)]
        assert max(spans) < 8192                                                  # ... only json members
    finally:
        server.shutdown()
        server.server_close()


def test_remote_inspect_without_a_manifest_counts_by_index_and_sizes_by_head(class_sorted, tmp_path):
    for tar in class_sorted.glob("shards-*"):        # the tars and .idx files, not manifest.json
        (tmp_path / tar.name).symlink_to(tar)
    server, url = serve(tmp_path)
    try:
        summary = summarize(url + "/shards-{000000..000001}.tar")
        size = sum(os.path.getsize(p) for p in class_sorted.glob("*.tar"))
        assert (summary.shards, summary.clips, summary.num_bytes, summary.complete) == (2, 20, size, False)
        assert all(method == "HEAD" or path.endswith((".idx", ".json")) for method, path, _ in server.log)
        assert "?" in summary.table().splitlines()[1] and "inspect a local copy" in summary.table()
    finally:
        server.shutdown()
        server.server_close()
