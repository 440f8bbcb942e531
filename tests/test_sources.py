"""Inputs -> SourceItem lists: layouts, CSVs, list files, globs, deterministic order, clear errors."""

from __future__ import annotations

import pytest

from avshards.sources import SourceError, SourceItem, resolve_sources


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_class_folders_give_labels_in_sorted_order(tmp_path):
    for rel in ["b/2.mp4", "a/z.avi", "a/sub/y.mp4", "b/1.mkv", "top.mp4", "a/notes.txt", "a/.hidden.mp4"]:
        touch(tmp_path / rel)
    items = resolve_sources(tmp_path)
    assert [(i.label or "", i.id) for i in items] == [
        ("", "top.mp4"), ("a", "a/sub/y.mp4"), ("a", "a/z.avi"), ("b", "b/1.mkv"), ("b", "b/2.mp4")]
    assert items[0].label is None
    assert resolve_sources(tmp_path) == items        # deterministic


def test_audio_only_folder(tmp_path):
    for rel in ["dog/1.wav", "cat/2.mp3", "cat/3.flac", "rain/4.ogg"]:
        touch(tmp_path / rel)
    assert [i.label for i in resolve_sources(tmp_path)] == ["cat", "cat", "dog", "rain"]


def test_generic_csv_with_and_without_header(tmp_path):
    (tmp_path / "with.csv").write_text("path,label,start,end,split\nv/a.mp4,run,1.5,3,train\nv/b.mp4,sit,,,test\n")
    (tmp_path / "without.csv").write_text("v/a.mp4,run,1.5,3\nv/b.mp4,sit\n")
    for name in ("with.csv", "without.csv"):
        a, b = resolve_sources(tmp_path / name)
        assert a == SourceItem(str(tmp_path / "v/a.mp4"), "run", "train" if name == "with.csv" else None,
                               1.5, 3.0, "v/a.mp4")
        assert (b.label, b.start, b.end) == ("sit", None, None)
    other = resolve_sources(tmp_path / "with.csv", root="/data")
    assert other[0].path == "/data/v/a.mp4"


def test_kinetics_csv_maps_ids_to_cut_or_full_files(tmp_path):
    touch(tmp_path / "videos/abseiling/abc_def-1_000010_000020.mp4")   # already cut by a downloader
    touch(tmp_path / "videos/x_full.mp4")                               # full video: we cut it
    csv = tmp_path / "train.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                   "abseiling,abc_def-1,10,20,train,0\nzumba,x_full,5,15,train,0\nzumba,missing,0,10,val,0\n")
    cut, full, missing = resolve_sources(csv, root=tmp_path / "videos")
    assert cut.path.endswith("abc_def-1_000010_000020.mp4") and (cut.start, cut.end) == (None, None)
    assert full.path.endswith("x_full.mp4") and (full.start, full.end, full.label) == (5.0, 15.0, "zumba")
    assert missing.id == "missing" and missing.split == "val"   # the build reports it as not found


def test_list_file_and_glob(tmp_path):
    for rel in ["v/1.mp4", "v/2.mp4", "w/3.mp4"]:
        touch(tmp_path / rel)
    (tmp_path / "list.txt").write_text("# my videos\nw/3.mp4\n\nv/1.mp4\n")
    assert [i.path for i in resolve_sources(tmp_path / "list.txt")] == [str(tmp_path / "w/3.mp4"),
                                                                       str(tmp_path / "v/1.mp4")]
    found = resolve_sources(str(tmp_path / "**/*.mp4"))
    assert [(i.label, i.path) for i in found] == [("v", str(tmp_path / "v/1.mp4")), ("v", str(tmp_path / "v/2.mp4")),
                                                 ("w", str(tmp_path / "w/3.mp4"))]


def test_missing_or_empty_src_says_what_to_do(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        resolve_sources(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no media files"):
        resolve_sources(tmp_path / "empty")
    (tmp_path / "bad.csv").write_text("path,label,start\nv.mp4,a,soon\n")
    with pytest.raises(SourceError, match="line 2"):
        resolve_sources(tmp_path / "bad.csv")
