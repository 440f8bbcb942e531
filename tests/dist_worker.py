"""Run by tests/test_distributed.py under ``python -m torch.distributed.run`` (one copy per rank).

    dist_worker.py loader SHARDS OUT_FOLDER   each rank writes OUT_FOLDER/rank{R}.json: the clip keys
                                              of every batch it got, per epoch, for two epochs
    dist_worker.py syncbn OUT_FOLDER          each rank writes OUT_FOLDER/rank{R}.json: whether the
                                              trainer's --sync-bn layers, fed half a batch, match plain
                                              batch norm on the whole batch (outputs, gradients, stats)
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


def syncbn(out: str) -> None:
    from crisscross.runtime import convert_sync_bn

    dist.init_process_group("gloo", timeout=TIMEOUT)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)                                   # the same batch and weights on every rank
    x = torch.randn(2 * world, 3, 2, 5, 5) * 3 + 1
    weight = torch.arange(x.numel(), dtype=torch.float32).view_as(x) / x.numel()
    ref = torch.nn.Sequential(torch.nn.BatchNorm3d(3))
    ref[0].weight.data.uniform_()
    synced = convert_sync_bn(torch.nn.Sequential(torch.nn.BatchNorm3d(3)), torch.device("cpu"))
    synced.load_state_dict(ref.state_dict())
    whole = x.clone().requires_grad_()
    out_ref = ref(whole)
    (out_ref * weight).sum().backward()
    part = slice(2 * rank, 2 * rank + 2)                    # this rank's half of the batch
    mine = x[part].clone().requires_grad_()
    out_mine = synced(mine)
    (out_mine * weight[part]).sum().backward()
    grad_w = synced[0].weight.grad.clone()
    dist.all_reduce(grad_w)                                # what DDP does with parameter gradients
    close = {"output": torch.allclose(out_mine, out_ref[part], atol=1e-5),
             "input_grad": torch.allclose(mine.grad, whole.grad[part], atol=1e-5),
             "weight_grad": torch.allclose(grad_w, ref[0].weight.grad, atol=1e-4),
             "running_mean": torch.allclose(synced[0].running_mean, ref[0].running_mean, atol=1e-6),
             "running_var": torch.allclose(synced[0].running_var, ref[0].running_var, atol=1e-5),
             "type": type(synced[0]).__name__}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(close, f)
    dist.barrier()          # no rank tears the group down while another still uses it
    dist.destroy_process_group()


def train(args: list[str]) -> None:
    from crisscross.cli import main

    if "train" not in main.commands:   # registered by the trainer's own line in crisscross/cli.py
        from crisscross.train_cli import train_command
        main.add_command(train_command)
    main(["train", *args], standalone_mode=True)


if __name__ == "__main__":
    if sys.argv[1] == "loader":
        loader(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "syncbn":
        syncbn(sys.argv[2])
    elif sys.argv[1] == "train":
        train(sys.argv[2:])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}; use loader, syncbn or train")
