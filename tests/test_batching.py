"""The step plan: every world size and accumulation takes the same clips per step, each position of the order once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipelines.data.batching import Step, plan_steps


@given(st.lists(st.integers(0, 40), max_size=40), st.integers(1, 5), st.integers(1, 3), st.integers(1, 4))
def test_every_process_takes_its_share_of_the_same_steps_once(order, batch_size, accumulate, world):
    size = batch_size * accumulate * world
    plans = [plan_steps(order, batch_size, accumulate, world, rank) for rank in range(world)]
    expected = [tuple(order[i:i + size]) for i in range(0, len(order), size)]  # order may repeat (balanced draws)
    for plan in plans:
        assert [step.clips for step in plan] == expected  # the same steps in every process
    for s, clips in enumerate(expected):
        taken = []
        assert len({len(plan[s].micro) for plan in plans}) == 1  # as many micro-batches in every process
        for rank, plan in enumerate(plans):
            step = plan[s]
            assert 1 <= len(step.micro) <= accumulate and all(1 <= len(m) <= batch_size for m in step.micro)
            assert step.filler == (len(clips) <= rank)
            for j, m in enumerate(step.micro):
                if step.is_filler(j):
                    assert m == (clips[0],)
                else:
                    taken += list(m)
        assert sorted(taken) == sorted(clips)  # each position once: no padding, nothing dropped


def test_one_process_cuts_the_order_into_consecutive_batches():
    order = [5, 3, 0, 4, 1, 2, 6]
    assert plan_steps(order, 3) == [Step((5, 3, 0), ((5, 3, 0),)), Step((4, 1, 2), ((4, 1, 2),)),
                                    Step((6,), ((6,),))]
    assert plan_steps(order, 2, accumulate=2) == [Step((5, 3, 0, 4), ((5, 3), (0, 4))),
                                                  Step((1, 2, 6), ((1, 2), (6,)))]
    # two processes at batch 2: rank 1 has no clip in the last step and joins it with a zero-weight filler
    assert plan_steps(order[:5], 2, world=2, rank=0) == [Step((5, 3, 0, 4), ((5, 0),)), Step((1,), ((1,),))]
    assert plan_steps(order[:5], 2, world=2, rank=1) == [Step((5, 3, 0, 4), ((3, 4),)),
                                                         Step((1,), ((1,),), fillers=1)]
    # ... and at batch 1 with accumulation, rank 1's shorter share of the last step ends with a filler
    assert plan_steps(order[:5], 1, accumulate=2, world=2, rank=1)[-1] == Step((1,), ((1,),), fillers=1)
    assert plan_steps(order[:3], 1, accumulate=2, world=2, rank=1) == [Step((5, 3, 0), ((3,), (5,)), fillers=1)]
