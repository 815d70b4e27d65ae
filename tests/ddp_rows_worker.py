"""Run by `tests/test_model.py` under `torchrun --nproc_per_node 2`: every ablation row of the paper trains two
steps under DistributedDataParallel (which rejects parameters that get no gradient), and the replicas stay equal.
Rank 0 writes, per row, "ok" or the error."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from test_model import ABLATION_ROWS, batch
from torch.nn.parallel import DistributedDataParallel

import dualnet


def one_row(overrides: dict, rank: int) -> str:
    torch.manual_seed(0)  # the same initial weights on both ranks (DDP also broadcasts rank 0's)
    config = dualnet.preset("tiny", **overrides)
    model = DistributedDataParallel(dualnet.MicroDualNet(config))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    labels = torch.tensor([0, 1, 0])
    for step in range(2):  # an unused parameter fails at the second step's forward
        inputs = batch(config, seed=10 * step + rank)  # each rank its own clips
        out = model(**inputs, labels=labels)
        loss, _ = model.module.loss(out, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    weights = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    both = [torch.zeros_like(weights) for _ in range(dist.get_world_size())]
    dist.all_gather(both, weights)
    return "ok" if torch.equal(both[0], both[1]) else "replicas differ"


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {}
    for name, overrides in ABLATION_ROWS.items():
        try:
            results[name] = one_row(overrides, rank)
        except RuntimeError as error:  # DDP's unused-parameter error, among others
            results[name] = str(error).splitlines()[0]
            break  # the other rank may be stuck in a collective: stop here
    if rank == 0:
        json.dump(results, open(out, "w"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
