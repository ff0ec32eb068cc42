"""Hypothesis: random interleavings of token requests, reports, logouts and time.

Several flows (tabs, page loads) of one visitor act in any order. Whatever
happens, from outside: never two flows holding tokens at once, never more than
1 + max_retries tokens per flow, never authenticated without a success report
for the flow that holds the visitor, and every answer is a typed reply.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statemachine import ActivationTracker, Answer, State, TrackerInputError
from statemachine.protocol.options import SECURED
from statemachine.stores import MemoryStore
from statemachine.tracking._rules import lease_seconds
from tests.helpers import anonymous, defensive
from tests.tracker_harness import Clock, callback, tracker_operations

op = tracker_operations([1.0, 20.0, 100.0])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from([defensive, anonymous]),
    ops=st.lists(op, max_size=40),
)
def test_random_interleavings_keep_the_invariants(policy: Any, ops: list[Any]) -> None:
    clock = Clock()
    tracker = ActivationTracker(policy(), MemoryStore(), clock=clock)
    budget = 1 + tracker.policy.retry.max_retries
    lease = lease_seconds(tracker.policy)
    minted = 0
    tokens_per_flow: dict[str, int] = {}
    holder: str | None = None  # the flow handed a token or the fallback, until it ends
    last_step = 0.0  # when the holder last moved (each step renews its lease)
    success_reported = False

    def provider() -> str:
        nonlocal minted
        minted += 1
        return f"token-{minted}"

    for kind, flow, arg in ops:
        if kind == "wait":
            clock.now += arg
            continue
        if kind == "logout":
            view = tracker.logout("v")
            assert view is None or view.state is State.UNAUTHENTICATED
            holder, success_reported = None, False
            continue
        before = tracker.view("v")
        if kind == "token":
            reply = tracker.token_request("v", flow, provider)
            assert isinstance(reply.answer, Answer)
            if reply.answer is Answer.TOKEN and reply.state is State.ACTIVATING:
                tokens_per_flow[flow] = tokens_per_flow.get(flow, 0) + 1
                assert tokens_per_flow[flow] <= budget, "more tokens than the retry budget"
                if holder is not None and holder != flow:
                    assert clock.now - last_step >= lease, "two flows in flight at once"
                holder, last_step, success_reported = flow, clock.now, False
            elif reply.answer is Answer.ANONYMOUS and reply.state is State.ACTIVATING_ANONYMOUS:
                holder, last_step = flow, clock.now
            elif reply.answer is Answer.DO_NOT_ACTIVATE:
                holder = None
            elif reply.answer is Answer.REFUSED:
                assert before is not None
                assert before.state.in_flight
                assert tracker.view("v") == before  # refused: nothing moved
        else:
            succeeded, option_type = arg
            try:
                reply = tracker.report("v", flow, callback(succeeded, option_type, "nope"))
            except TrackerInputError:
                assert tracker.view("v") == before  # a wrong-kind report changed nothing
                continue
            if reply.accepted:
                if reply.state is State.AUTHENTICATED:
                    assert succeeded
                    assert option_type == SECURED
                    success_reported = True
                holder = flow if reply.state is State.ACTIVATING_ANONYMOUS else None
                last_step = clock.now
            else:
                assert tracker.view("v") == before or before is None or before.state.in_flight
        view = tracker.view("v")
        if view is not None and view.state is State.AUTHENTICATED:
            assert success_reported, "authenticated without a success report"
