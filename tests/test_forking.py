"""A worker forked from a process that decoded video must not hang on the decoder's threads (`pipelines.forking`).

The hang, as it was met (a CI run stopped for good in `test_pose_clips.py`'s forked build): a PyAV decoder with
frame threads, left as cyclic garbage by earlier work in the process, is freed by the forked child's garbage
collector; its `avcodec_free_context` waits on the decoder's threads, which the child does not have.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from conftest import REPO, requires_shared, shortest_clip

# Decode a few frames with frame threads, leave the decoder in a reference cycle (collection off so it stays), fork,
# and collect in the child, as a forked worker's allocations eventually make Python do. Prints how the child ended.
SCENARIO = """
import gc, os, sys, time
import av
from pipelines.forking import frozen_for_fork

gc.disable()
container = av.open(sys.argv[1])
stream = container.streams.video[0]
stream.thread_type = "AUTO"
for i, frame in enumerate(container.decode(stream)):
    if i == 4:
        break
cycle = {"container": container, "stream": stream}
cycle["itself"] = cycle
del container, stream, frame, cycle
with frozen_for_fork() if sys.argv[2] == "frozen" else open(os.devnull):
    pid = os.fork()
    if pid == 0:
        gc.enable()
        gc.collect()
        os._exit(0)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("finished", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print("hung")
"""


def _scenario(mode: str, wait_s: float) -> str:
    out = subprocess.run([sys.executable, "-c", SCENARIO, str(shortest_clip()), mode, str(wait_s)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@requires_shared
def test_a_child_forked_inside_frozen_for_fork_survives_a_threaded_decoder_left_as_garbage():
    if _scenario("plain", 5) != "hung":
        pytest.skip("this PyAV frees a threaded decoder in a forked child without hanging: nothing to guard here")
    assert _scenario("frozen", 60) == "finished 0"


class _FreezeCounts:
    """A dataset whose items are the frozen generation's size in the process that reads them."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return gc.get_freeze_count()


def test_forked_iter_forks_a_loaders_workers_frozen_and_unfreezes_the_parent():
    from torch.utils.data import DataLoader

    from pipelines.forking import forked_iter

    with_workers = list(forked_iter(DataLoader(_FreezeCounts(), batch_size=None, num_workers=1)))
    assert len(with_workers) == 2 and all(int(n) > 0 for n in with_workers)  # read in a worker forked frozen
    assert gc.get_freeze_count() == 0
    assert [int(n) for n in forked_iter(DataLoader(_FreezeCounts(), batch_size=None))] == [0, 0]  # no fork, no freeze
