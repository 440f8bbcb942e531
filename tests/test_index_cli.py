"""`avshards index`: index files for shards that lack them, readable by DALI's webdataset reader."""

import os

import pytest
from click.testing import CliRunner

from avshards.cli import main
from avshards.index import parse_index, scan_tar


def run(*args):
    return CliRunner().invoke(main, ["index", *map(str, args)])


def test_index_writes_missing_and_skips_existing(synth_shards):
    folder = synth_shards([3, 2])
    tars = sorted(folder.glob("*.tar"))
    r = run(folder)
    assert r.exit_code == 0, r.output
    assert "indexed 2 shard(s), skipped 0" in r.output
    for tar in tars:
        idx = tar.with_suffix(".idx")
        assert [s.key for s in parse_index(idx.read_text())] == [s.key for s in scan_tar(str(tar))]
    idx = tars[0].with_suffix(".idx")
    future = tars[0].stat().st_mtime + 100
    os.utime(idx, (future, future))
    r = run(tars[0], tars[1])
    assert "indexed 0 shard(s), skipped 2" in r.output
    assert idx.stat().st_mtime == future                          # untouched
    r = run(folder / "shards-{000000..000001}.tar", "--overwrite")
    assert "indexed 2 shard(s), skipped 0" in r.output
    assert idx.stat().st_mtime < future
    os.utime(idx, (0, 0))                                         # older than its tar: stale
    r = run(folder)
    assert "indexed 1 shard(s), skipped 1" in r.output and idx.stat().st_mtime > 0


@pytest.mark.parametrize("arg, words", [("nowhere", "no shard found at"),
                                        ("s3://bucket/shards-0.tar", "is remote")])
def test_index_user_errors_are_one_sentence(tmp_path, arg, words):
    r = run(tmp_path / arg if arg == "nowhere" else arg)
    assert r.exit_code != 0 and words in r.output and "Traceback" not in r.output


def test_index_corrupt_tar_names_the_shard(tmp_path):
    bad = tmp_path / "shards-000000.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    r = run(bad)
    assert r.exit_code != 0 and "shards-000000.tar is not a readable tar" in r.output


@pytest.mark.dali
def test_dali_webdataset_reader_uses_the_index(synth_shards):
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn

    folder = synth_shards([3, 2])
    assert run(folder).exit_code == 0
    tars = sorted(map(str, folder.glob("*.tar")))

    @dali.pipeline_def(batch_size=5, num_threads=1, device_id=None)
    def pipe():
        return fn.readers.webdataset(paths=tars, index_paths=[t[:-4] + ".idx" for t in tars],
                                     ext=["json"], missing_component_behavior="error")

    p = pipe()
    p.build()
    (out,) = p.run()
    keys = sorted(bytes(out.at(i)).split(b'"key": "')[1][:10].decode() for i in range(5))
    assert keys == [f"clip{i:06d}" for i in range(5)]
