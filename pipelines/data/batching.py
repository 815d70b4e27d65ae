"""Which clips each optimizer step takes, and which of them each process and each accumulated micro-batch takes.

One plan for any number of processes: the epoch's order (a permutation, or class-balanced draws) is cut into steps of
``batch_size * world * accumulate`` clips; a step's clips are dealt round-robin to the processes, and each process
cuts its share into micro-batches of at most ``batch_size``. Every position of the order is in exactly one
micro-batch of one process: nothing is repeated to even out the processes (as ``DistributedSampler`` pads), and a
step is the same clips whether one process takes them in one batch, in accumulated micro-batches, or several
processes share them. Every process runs the same number of micro-batches in a step (collectives inside the model,
such as MAC's gathered negatives, pair up across processes): a process whose share of a (last) step is shorter,
or empty, runs fillers after its own micro-batches, one clip of the step each at loss weight 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One optimizer step as one process sees it."""

    clips: tuple[int, ...]  # the step's clips, all processes together: its loss is their (weighted) mean
    micro: tuple[tuple[int, ...], ...]  # this process's micro-batches, each of at most batch_size clips
    fillers: int = 0  # the last `fillers` micro-batches are one clip each at loss weight 0 (the share ran short)

    @property
    def filler(self) -> bool:
        """This process has no clip in the step: every micro-batch is a filler."""
        return self.fillers == len(self.micro)

    def is_filler(self, j: int) -> bool:
        """Whether micro-batch `j` is a filler (loss weight 0)."""
        return j >= len(self.micro) - self.fillers


def plan_steps(order: Sequence[int], batch_size: int, accumulate: int = 1, world: int = 1,
               rank: int = 0) -> list[Step]:
    """The epoch's steps for process `rank` of `world`, taking the clips in `order`."""
    size = batch_size * accumulate * world
    steps = []
    for start in range(0, len(order), size):
        clips = tuple(int(i) for i in order[start:start + size])
        share = clips[rank::world]
        micro = tuple(share[i:i + batch_size] for i in range(0, len(share), batch_size))
        most = max(-(-len(clips[r::world]) // batch_size) for r in range(world))  # every process runs this many
        fillers = most - len(micro)
        steps.append(Step(clips, micro + ((clips[0],),) * fillers, fillers))
    return steps
