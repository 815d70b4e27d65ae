"""A training case where one process, accumulated micro-batches and several processes must give the same run.

The pose-only tiny model without dropout or MAC: nothing in it depends on which clips share a batch (no BatchNorm;
MAC's negatives are the clips of a process's own micro-batch) or on a process's random stream (dropout), so a step
is the same whoever computes it. Five clips with skewed labels: class re-weighting changes each clip's share of a
step, and with 4 clips a step the last step has 1 clip, which one of 2 processes cannot share. SGD, whose update is
linear in the gradient: AdamW divides each gradient by its running size and so turns float32 summation-order noise
in near-zero gradients into whole lr-sized steps (22 of the 153,600 weights of the first pose layer 1e-5 apart after
4 steps, measured), where SGD keeps it at the noise's size.
"""

from __future__ import annotations

import dualnet
from pipelines.data.clips import LabelledClips
from pipelines.formats.params import TrainParams
from pipelines.formats.tube_packs import TubeSet


def exact_config():
    return dualnet.preset("tiny", num_classes=3, modality="pose", dropout=0.0, mac=False)


def exact_params(**changes) -> TrainParams:
    return TrainParams(**{"epochs": 2, "lr": 0.03, "optimizer": "sgd", **changes})


def five_clips(tubes: TubeSet) -> LabelledClips:
    return LabelledClips(tuple(sorted(tubes.names()))[:5], (0, 0, 0, 1, 2))


def six_clips(tubes: TubeSet) -> LabelledClips:
    return LabelledClips(tuple(sorted(tubes.names())), (0, 0, 0, 1, 2, 2))
