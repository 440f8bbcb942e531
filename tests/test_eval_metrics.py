"""Retrieval metrics on a hand-made case, SVM bookkeeping (clip averaging, validation split), reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from crisscross.eval.report import confusion_matrix, markdown_table, write_report
from crisscross.eval.retrieval import cosine_neighbours, recall_at_k
from crisscross.eval.svm import ClipFeatures, average_per_video, svm_sweep, validation_split


def test_retrieval_hand_made_case():
    # Gallery on the unit circle at 0, 90, 180, 270 degrees; classes a, b, a, c.
    gallery = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], float)
    labels = ["a", "b", "a", "c"]
    # Query 1 sits at 10 degrees (nearest: 0 -> a, then 90 -> b, then 270 -> c, then 180 -> a).
    # Query 2 sits at 80 degrees, class c: nearest 90 (b), 0 (a), 180 (a), 270 (c).
    q = np.array([[np.cos(np.radians(10)), np.sin(np.radians(10))],
                  [np.cos(np.radians(80)), np.sin(np.radians(80))]]) * 3.0   # scale must not matter
    assert cosine_neighbours(q, gallery, 4).tolist() == [[0, 1, 3, 2], [1, 0, 2, 3]]
    r = recall_at_k(gallery, labels, q, ["a", "c"], ks=(1, 2, 3, 4))
    assert r == {1: 0.5, 2: 0.5, 3: 0.5, 4: 1.0}
    # k larger than the gallery is capped at the gallery size.
    assert recall_at_k(gallery, labels, q, ["a", "c"], ks=(1, 20))[20] == 1.0


def test_clip_scores_are_averaged_per_video():
    scores = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    out = average_per_video(scores, np.array([0, 0, 1]), 2)
    assert out.tolist() == [[0.5, 1.5], [2.0, 2.0]]
    with pytest.raises(ValueError, match="no clips"):
        average_per_video(scores, np.array([0, 0, 0]), 2)


def test_validation_split_is_stratified_and_keeps_every_class():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    train, val = validation_split(labels, 0.2, seed=1)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(16))
    held = [labels[i] for i in val]
    assert held.count("a") == 2 and held.count("b") == 1 and "c" not in held


def test_svm_sweep_separates_clusters_and_reports_its_choice():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3

    def clips(n_videos, per_video):
        labels = [str(v % 3) for v in range(n_videos)]
        video = np.repeat(np.arange(n_videos), per_video)
        x = centres[[int(labels[v]) for v in video]] + rng.normal(size=(len(video), 16))
        return ClipFeatures(x.astype(np.float32), video, [f"v{i}" for i in range(n_videos)], labels)

    train, test = clips(30, 4), clips(12, 3)
    r = svm_sweep(train, test, cs=(1e-3, 1.0))
    assert r.selected_on == "validation" and r.accuracy == 1.0
    assert all("validation" in v for v in r.sweep.values())
    t = svm_sweep(train, test, cs=(1e-3, 1.0), select_on="test")
    assert t.selected_on == "test" and all("test" in v for v in t.sweep.values())


def test_report_files(tmp_path):
    assert markdown_table(["Method", "UCF101"], [["ours", 0.7812]]) == (
        "| Method | UCF101 |\n|---|---|\n| ours | 78.1 |\n")
    cm = confusion_matrix(np.array([0, 1, 1, -1]), np.array([0, 0, 1, 1]), 2)
    assert cm.tolist() == [[1, 0], [1, 1]]
    paths = write_report(tmp_path, "r", {"title": "T", "accuracy": np.float64(0.5), "notes": ["n1"]},
                         "| a |\n", (cm, ["x", "y"]))
    assert json.loads(paths["json"].read_text())["accuracy"] == 0.5
    assert "- n1" in paths["markdown"].read_text()
    assert Image.open(paths["confusion"]).size[0] > 100


def test_combine_reports_lays_out_methods_by_datasets(tmp_path):
    from click.testing import CliRunner

    from crisscross.cli import main as crisscross_cli
    from crisscross.eval.report import combine_reports

    ucf = {"protocol": "linear", "dataset": "UCF101", "method": "k400", "accuracy": 0.839,
           "baseline": {"protocol": "linear", "dataset": "UCF101", "method": "random init", "accuracy": 0.2}}
    esc = {"protocol": "linear", "dataset": "ESC50", "method": "k400", "accuracy": 0.868}
    ret = {"protocol": "retrieval", "dataset": "UCF101", "method": "k400",
           "recall": {"R@1": 0.638, "R@5": 0.787, "R@20": 0.899}}
    table = combine_reports([ucf, esc, ret])
    assert table.splitlines() == [
        "| Method | UCF101 | ESC50 | UCF101 R@1 | UCF101 R@5 | UCF101 R@20 |",
        "|---|---|---|---|---|---|",
        "| k400 | 83.9 | 86.8 | 63.8 | 78.7 | 89.9 |",
        "| random init | 20.0 | - | - | - | - |"]
    paths = []
    for i, r in enumerate((ucf, esc)):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    result = CliRunner().invoke(crisscross_cli, ["eval", "table", *map(str, paths), "--out", str(tmp_path / "t.md")])
    assert result.exit_code == 0 and (tmp_path / "t.md").read_text().startswith("| Method | UCF101 | ESC50 |")
    (tmp_path / "bad.json").write_text("{}")
    bad = CliRunner().invoke(crisscross_cli, ["eval", "table", str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "not a report" in bad.output


def _c_disagreement_case() -> tuple[ClipFeatures, ClipFeatures]:
    """1-D features where validation and test prefer different C (see the test below).

    Fit part: 35 "a" videos far left (-6), 5 "a" at 0, 8 "b" at 2. Every C up to 1e-2 puts the
    boundary left of 0 (the far "a" mass dominates a heavily regularised fit), C = 1 puts it
    between 0 and 2 (the margin). The validation part holds its "b" videos at 0.4 (only small C
    gets them right); the test split has "a" videos at -0.2 (only large C gets them right)."""
    rng = np.random.default_rng(0)
    labels = ["a"] * 50 + ["b"] * 10
    _, val = validation_split(labels, seed=0)                 # the part svm_sweep holds out (seed 0)
    x = np.empty(len(labels))
    fit_a = [i for i in range(50) if i not in val]
    x[fit_a] = rng.normal(-6, 0.3, len(fit_a))
    x[fit_a[:5]] = rng.normal(0, 0.05, 5)
    x[50:] = rng.normal(2, 0.05, 10)
    x[[i for i in val if labels[i] == "a"]] = -6.0
    x[[i for i in val if labels[i] == "b"]] = 0.4
    train = ClipFeatures(x[:, None].astype(np.float32), np.arange(60), [f"t{i}" for i in range(60)], labels)
    test_x = np.r_[np.full(10, -0.2), np.full(10, 2.0)] + rng.normal(0, 0.02, 20)
    test = ClipFeatures(test_x[:, None].astype(np.float32), np.arange(20), [f"s{i}" for i in range(20)],
                        ["a"] * 10 + ["b"] * 10)
    return train, test


def test_c_is_chosen_on_validation_and_only_it_is_scored_on_test():
    """Kills the mutants "choose C by test accuracy but call it validation" (the chosen C would be the
    test argmax, 1.0) and "score every C on the test split" (test accuracies beside other Cs)."""
    train, test = _c_disagreement_case()
    on_test = svm_sweep(train, test, select_on="test")
    chosen = svm_sweep(train, test)
    validation = {c: v["validation"] for c, v in chosen.sweep.items()}
    best_on_validation = min(c for c, a in validation.items() if a == max(validation.values()))
    best_on_test = min(c for c, v in on_test.sweep.items() if v["test"] == on_test.accuracy)
    assert best_on_validation != best_on_test, (validation, on_test.sweep)      # the case discriminates
    assert chosen.C == best_on_validation and chosen.selected_on == "validation"
    assert [c for c, v in chosen.sweep.items() if "test" in v] == [chosen.C]
    assert chosen.accuracy == pytest.approx(on_test.sweep[chosen.C]["test"]) and chosen.accuracy < on_test.accuracy


@pytest.mark.gpu
def test_sweep_on_cuda_matches_cpu():
    """The solver on a GPU (``--device cuda``): the same choice of C, accuracy and validation scores."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    train, test = _c_disagreement_case()
    cpu, gpu = svm_sweep(train, test), svm_sweep(train, test, device="cuda")
    assert (gpu.C, gpu.accuracy, gpu.sweep) == (cpu.C, cpu.accuracy, cpu.sweep)
