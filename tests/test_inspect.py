"""`avshards inspect / verify / preview` on built and on deliberately broken shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

import avshards
import media_gen as gen
from avshards.cli import main
from avshards.format import MANIFEST_NAME
from avshards.inspect import log_mel, mel_filterbank, summarize
from synth import synthetic_clip


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    (src / "talk").mkdir()
    (src / "quiet").mkdir()
    gen.video(src / "talk/one.mp4", 2.0)
    gen.video(src / "quiet/two.mp4", 1.0, audio=None)
    out = tmp_path_factory.mktemp("shards")
    avshards.build(src, out, short_side=64, videos_per_shard=1, workers=1, progress=False)
    return out


def test_inspect_table_from_manifest_and_by_scanning(shards, synth_shards):
    res = CliRunner().invoke(main, ["inspect", str(shards)])
    assert res.exit_code == 0, res.output
    header, values = res.output.splitlines()[:2]
    assert header.split()[:5] == ["shards", "clips", "hours", "labels", "has_audio"]
    assert values.split()[:5] == ["2", "2", "0.001", "2", "50%"]
    scanned = summarize(str(synth_shards([3, 2])))          # a manifest without counts: scans the jsons
    assert (scanned.shards, scanned.clips, scanned.labels["a"], scanned.with_audio) == (2, 5, 3, 5)
    assert scanned.seconds == pytest.approx(10.0)


def test_verify_passes_on_built_shards(shards):
    res = CliRunner().invoke(main, ["verify", str(shards)])
    assert res.exit_code == 0 and res.output.startswith("ok:")


def test_verify_reports_content_that_disagrees_with_its_json(tmp_path):
    good = synthetic_clip("good0")
    bad = synthetic_clip("bad0")
    meta = json.loads(bad["json"])
    meta["num_samples"] += 5                                  # json claims audio that is not there
    meta["width"] = 99
    bad["json"] = json.dumps(meta).encode()
    with wds.TarWriter(str(tmp_path / "shards-000000.tar"), mtime=0) as sink:
        sink.write(good)
        sink.write(bad)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"shards": [{"name": "shards-000000.tar", "num_samples": 3}]}))
    res = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert res.exit_code == 1
    assert "bad0: 32 frame(s) from frame 0 are 32x24, json says 99x24" in res.output
    assert "json says 32005" in res.output and "good0" not in res.output
    assert "has 2" in res.output                              # the manifest count is checked too


def test_verify_reports_a_truncated_shard(shards, tmp_path):
    data = (shards / "shards-000000.tar").read_bytes()
    (tmp_path / "shards-000000.tar").write_bytes(data[: len(data) // 2])
    res = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert res.exit_code == 1 and "cannot be read to the end" in res.output


def test_preview_writes_a_contact_sheet(shards, tmp_path):
    out = tmp_path / "sheet.png"
    res = CliRunner().invoke(main, ["preview", str(shards), "--out", str(out), "--frames", "4"])
    assert res.exit_code == 0, res.output
    with Image.open(out) as img:
        assert img.width > 600 and img.height > 200
        assert len(np.unique(np.asarray(img.convert("L")))) > 50   # real pictures, not a blank page


def test_log_mel_puts_a_tone_in_the_right_band():
    t = np.arange(16000) / 16000
    spec = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    centres = np.argmax(mel_filterbank(), axis=1) * 16000 / 400     # FFT bin of each filter's peak
    assert abs(centres[np.argmax(spec.mean(axis=1))] - 1000) < 100


def test_commands_refuse_a_folder_without_shards(tmp_path):
    for cmd in (["inspect"], ["verify"], ["preview"]):
        res = CliRunner().invoke(main, [*cmd, str(tmp_path)])
        assert res.exit_code == 2 and "has no shards" in res.output
