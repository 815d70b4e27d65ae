"""Run by `tests/test_model.py` under `torchrun --nproc_per_node 2`: MAC with gathered negatives on a global batch
split unevenly over two ranks, against one process's MAC over the whole batch. Rank 0 writes what it saw."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from dualnet.losses import mac_loss


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    n, k, e = 5, 3, 8
    z_st = torch.randn(n, k, e, generator=g, dtype=torch.float64, requires_grad=True)
    z_ts = torch.randn(n, k, e, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1])  # same-class pairs across the two ranks' rows
    present = torch.rand(n, k, generator=g) > 0.25
    rows = [slice(0, 3), slice(3, 5)][rank]  # 3 clips on rank 0, 2 on rank 1: the last batch does not divide
    local = mac_loss(z_st[rows], z_ts[rows], 0.1, labels[rows], present[rows], gather=True)
    local.backward()
    grads = torch.cat([z_st.grad.flatten(), z_ts.grad.flatten()])
    dist.all_reduce(grads)  # what DistributedDataParallel does to parameter gradients: the mean over ranks
    grads /= world
    losses = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(losses, local.detach().reshape(1))
    if rank == 0:
        a, b = z_st.detach().requires_grad_(), z_ts.detach().requires_grad_()
        whole = mac_loss(a, b, 0.1, labels, present)  # one process, the whole batch
        whole.backward()
        want = torch.cat([a.grad.flatten(), b.grad.flatten()])
        alone = mac_loss(z_st[rows].detach(), z_ts[rows].detach(), 0.1, labels[rows], present[rows])
        json.dump({"ranks_mean": float(torch.cat(losses).mean()), "whole": float(whole.detach()),
                   "grad_error": float((grads - want).abs().max()), "grad_scale": float(want.abs().max()),
                   "rank0_without_gather": float(alone), "rank0_with_gather": float(local.detach())},
                  open(out, "w"))
    dist.barrier()  # neither rank tears gloo down while the other still holds it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
