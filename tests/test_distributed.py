"""Several processes under ``python -m torch.distributed.run`` on CPU (gloo), from the same shards.

Each run starts 2 real processes (tests/dist_worker.py), so these are slow; the training ones use
the tiny-cpu preset for 2 steps.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "dist_worker.py"


def torchrun(*args: str, nproc: int = 2, timeout: float = 400, record: Path | None = None) -> subprocess.CompletedProcess:
    """Run tests/dist_worker.py ARGS in ``nproc`` processes on this machine; fail with their output.
    ``record``: where the train mode writes each rank's keys and timeout (``record``-rank{R}.json)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"DIST_WORKER_RECORD": str(record)} if record else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_ranks_see_disjoint_equal_shares_of_an_odd_shard_set(synth_shards, tmp_path):
    shards = synth_shards([5, 4, 2])          # 3 shards, 11 clips: nothing divides evenly
    torchrun("loader", str(shards), str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for epoch in range(2):
        seen = [[k for batch in r["epochs"][epoch] for k in batch] for r in ranks]
        assert len(seen[0]) == len(seen[1]) == 5                  # equal shares; 1 clip dropped
        assert [len(r["epochs"][epoch]) for r in ranks] == [r["len"] for r in ranks] == [3, 3]
        assert not set(seen[0]) & set(seen[1])                     # disjoint
        assert len(set(seen[0])) == 5


def train_args(shards, out, *extra: str) -> list[str]:
    return ["train", str(shards), "--preset", "tiny-cpu", "--batch-size", "4", "--epoch-size", "8",
            "--workers", "1", "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, media):
    """2 steps of tiny-cpu on 2 CPU processes, SyncBN by default, and a probe of real labelled sounds
    at the end (rank 0 probes, rank 1 waits); a checkpoint after step 1 and at the end."""
    import synth
    from avshards.build import build
    from avshards.sources import SourceItem

    root = tmp_path_factory.mktemp("ddp")
    synth.write_synthetic_shards(root / "shards", [5, 4, 3])
    build([SourceItem(str(media / f"audio/arcade_sfx/{c}{n}.wav"), c, "test" if n <= 2 else "train", id=f"{c}{n}")
           for c in ("coin", "jump", "laser") for n in range(1, 5)], root / "arcade", workers=2, progress=False)
    done = torchrun(*train_args(root / "shards", root / "run", "--steps", "2", "--checkpoint-every", "1",
                                "--probe", str(root / "arcade")), record=root / "record")
    return root, done


def test_two_rank_training_writes_one_checkpoint_and_log(two_rank_run):
    root, done = two_rank_run
    assert done.stdout.count("trained to step 2") == 1      # only rank 0 reports and writes
    state = torch.load(root / "run/checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and state["config"]["sync_bn"] is True       # the default, as the official code
    assert [s["stream"]["rank"] for s in state["loaders"]] == [0, 1]   # every rank's position kept
    rows = (root / "run/log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2                                  # header + one row per step, not per rank
    assert not [p for p in (root / "run").iterdir() if ".tmp" in p.name]


def test_rank_0_probes_while_the_others_wait_with_a_long_timeout(two_rank_run):
    """With --probe the process group waits up to PROBE_TIMEOUT in a collective (NCCL's default
    10 minutes would end the job while rank 0 probes a real set)."""
    from crisscross.training_probe import PROBE_TIMEOUT

    root, done = two_rank_run
    assert done.stdout.count("probe/arcade (audio): top-1") == 1
    with open(root / "run/log.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["probe/arcade"] == "" and 0.0 <= float(rows[1]["probe/arcade"]) <= 1.0
    for rank in range(2):
        record = json.loads((root / f"record-rank{rank}.json").read_text())
        assert record["timeout_s"] == PROBE_TIMEOUT.total_seconds()


def test_resume_on_a_different_world_size_continues_the_epoch(tmp_path):
    """2 ranks stop after one step of an epoch of 12 clips; 1 rank resumes (another world size) and
    finishes the epoch: over both runs every clip of the epoch is trained on exactly once."""
    import synth

    synth.write_synthetic_shards(tmp_path / "shards", [5, 4, 3])
    args = ["train", str(tmp_path / "shards"), "--preset", "tiny-cpu", "--batch-size", "4", "--epoch-size", "0",
            "--workers", "1", "--out", str(tmp_path / "run"), "--quiet", "--steps", "3"]
    torchrun(*args, "--stop-after", "1", record=tmp_path / "two")                 # 2 ranks x 2 clips
    before = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert before["step"] == 1 and len(before["loaders"]) == 2
    done = torchrun(*args, "--resume", "auto", nproc=1, record=tmp_path / "one")   # 1 rank x 4 clips, 2 steps
    assert "resuming epoch 0 of a run on 2 rank(s) x 1 worker(s) on 1 x 1" in done.stderr
    first = [k for r in range(2) for k in json.loads((tmp_path / f"two-rank{r}.json").read_text())["keys"]]
    rest = json.loads((tmp_path / "one-rank0.json").read_text())["keys"]
    assert len(first) == 4 and len(rest) == 8
    assert sorted(first + rest) == [f"clip{k:06d}" for k in range(12)]         # each clip once
    after = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    assert after["step"] == 3 and len(after["loaders"]) == 1 and after["loaders"][0]["stream"]["world_size"] == 1


def test_cpu_sync_bn_equals_batch_norm_over_the_global_batch(tmp_path):
    torchrun("syncbn", str(tmp_path))
    for r in range(2):
        checks = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert checks.pop("type") == "CpuSyncBatchNorm"
        assert all(checks.values()), checks
