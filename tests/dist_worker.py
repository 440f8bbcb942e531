"""Run by tests/test_distributed.py under ``python -m torch.distributed.run`` (one copy per rank).

    dist_worker.py loader SHARDS OUT_FOLDER   each rank writes OUT_FOLDER/rank{R}.json: the clip keys
                                              of every batch it got, per epoch, for two epochs
    dist_worker.py train ARGS...              ``crisscross train ARGS...`` (the real command)
"""

from __future__ import annotations

import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

TIMEOUT = datetime.timedelta(seconds=60)   # a rank left waiting in a collective fails instead of hanging


def loader(shards: str, out: str) -> None:
    from crisscross.data.loader import make_train_loader

    dist.init_process_group("gloo", timeout=TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    data = make_train_loader(shards, batch_size=2, num_workers=1, device="cpu", seed=0)
    epochs = []
    for epoch in range(2):
        data.set_epoch(epoch)
        keys = [list(batch["keys"]) for batch in data]
        # Like DDP's gradient all-reduce: every rank must reach it the same number of times.
        for _ in keys:
            dist.all_reduce(torch.ones(1))
        dist.barrier()
        epochs.append(keys)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world_size": world, "len": len(data), "epochs": epochs}, f)
    dist.destroy_process_group()


def train(args: list[str]) -> None:
    from crisscross.cli import main

    if "train" not in main.commands:   # registered by the trainer's own line in crisscross/cli.py
        from crisscross.train import train_command
        main.add_command(train_command)
    main(["train", *args], standalone_mode=True)


if __name__ == "__main__":
    if sys.argv[1] == "loader":
        loader(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "train":
        train(sys.argv[2:])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}; use loader or train")
