"""Several processes under ``python -m torch.distributed.run`` on CPU (gloo), from the same shards.

Each run starts 2 real processes (tests/dist_worker.py), so these are slow; the training ones use
the tiny-cpu preset for 2 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

WORKER = Path(__file__).parent / "dist_worker.py"


def torchrun(*args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run tests/dist_worker.py ARGS in ``nproc`` processes on this machine; fail with their output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
def two_rank_run(tmp_path_factory):
    """2 steps of tiny-cpu on 2 CPU processes, SyncBN by default; a checkpoint after step 1 and at the end."""
    import synth

    root = tmp_path_factory.mktemp("ddp")
    synth.write_synthetic_shards(root / "shards", [5, 4, 3])
    done = torchrun(*train_args(root / "shards", root / "run", "--steps", "2", "--checkpoint-every", "1"))
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


def test_resume_on_a_different_world_size_restarts_at_the_next_epoch(two_rank_run):
    root, _ = two_rank_run
    before = torch.load(root / "run/checkpoint.pt", weights_only=True)
    epoch = before["loaders"][0]["stream"]["epoch"]
    started = any(p != [0, 0] for s in before["loaders"] for p in s["stream"]["positions"])
    # One process (no torchrun) continues the 2-process run to step 3, by the documented rule.
    torchrun(*train_args(root / "shards", root / "run", "--steps", "3", "--resume", "auto"), nproc=1)
    after = torch.load(root / "run/checkpoint.pt", weights_only=True)
    assert after["step"] == 3 and len(after["loaders"]) == 1
    assert after["loaders"][0]["stream"]["epoch"] == epoch + started
    assert after["loaders"][0]["stream"]["world_size"] == 1


def test_cpu_sync_bn_equals_batch_norm_over_the_global_batch(tmp_path):
    torchrun("syncbn", str(tmp_path))
    for r in range(2):
        checks = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert checks.pop("type") == "CpuSyncBatchNorm"
        assert all(checks.values()), checks
