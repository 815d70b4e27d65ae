"""Which clips each optimizer step takes, and which of them each process and each accumulated micro-batch takes.

One plan for any number of processes: the epoch's order (a permutation, or class-balanced draws) is cut into steps of
``batch_size * world * accumulate`` clips; a step's clips are dealt round-robin to the processes, and each process
cuts its share into micro-batches of at most ``batch_size``. Every position of the order is in exactly one
micro-batch of one process: nothing is repeated to even out the processes (as ``DistributedSampler`` pads), and a
step is the same clips whether one process takes them in one batch, in accumulated micro-batches, or several
processes share them. A process whose share of a (last) step is empty gets a filler, one clip of the step at loss
weight 0, so that it still joins the step's gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One optimizer step as one process sees it."""

    clips: tuple[int, ...]  # the step's clips, all processes together: its loss is their (weighted) mean
    micro: tuple[tuple[int, ...], ...]  # this process's micro-batches, each of at most batch_size clips
    filler: bool = False  # this process has no clip in the step: `micro` is one clip, at loss weight 0


def plan_steps(order: Sequence[int], batch_size: int, accumulate: int = 1, world: int = 1,
               rank: int = 0) -> list[Step]:
    """The epoch's steps for process `rank` of `world`, taking the clips in `order`."""
    size = batch_size * accumulate * world
    steps = []
    for start in range(0, len(order), size):
        clips = tuple(int(i) for i in order[start:start + size])
        share = clips[rank::world]
        if share:
            micro = tuple(share[i:i + batch_size] for i in range(0, len(share), batch_size))
            steps.append(Step(clips, micro))
        else:
            steps.append(Step(clips, ((clips[0],),), filler=True))
    return steps
