"""`train` under torchrun with a model the CLI does not offer (tests/test_train.py runs it with --nproc_per_node 2).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/torchrun_train.py STORE BATCH_SIZE BALANCE
"""

from __future__ import annotations

import sys

from pipelines.formats.tube_packs import TubeSet
from pipelines.stages.train import train
from train_cases import exact_config, exact_params, five_clips, six_clips

if __name__ == "__main__":
    store, batch_size, balance = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tubes = TubeSet(store)
    train(exact_config(), tubes, five_clips(tubes), six_clips(tubes), exact_params(batch_size=batch_size,
                                                                                   balance=balance))
