"""The tag-driven rules: how token requests, reports and logouts move the same table.

In a web backend the browser's tag activates (and retries) by itself; the
server sees only its token requests, the page's report of the tag's callback,
and logouts, each possibly on another worker. These functions translate each
of those into rows of the table, on the visitor's record (``records``).
They do no I/O, so the asyncio and blocking trackers share them, and tests
can step them directly.

A *flow id* is drawn by the page for each ``activate`` call and sent with
every token request and the report: it is how a retry of the tag (same flow)
is told apart from another tab or page load (another flow).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Final, NamedTuple

from statemachine.engine._core import HISTORY_LIMIT
from statemachine.engine._effects import (
    ACTIVATED,
    BackOff,
    CallActivator,
    Effect,
    FetchToken,
    Finish,
    TokenFailed,
    TokenReceived,
)
from statemachine.protocol.options import ANONYMOUS, SECURED, AuthenticationOption
from statemachine.protocol.policy import (
    ActivationPolicy,
    longest_backoff,
    mint_budget,
    session_lifetime,
)
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.replies import Answer, ReportReply, TokenReply
from statemachine.protocol.results import FAILURE, SUCCESS, HistoryEntry
from statemachine.protocol.states import State, Trigger
from statemachine.tracking._record import ENDED_FLOWS_LIMIT, FLOW_ID, VisitorRecord

LEASE_GRACE: Final = 5.0
"""Seconds added to a step's worst case before a silent flow is let go."""

_UNBOUNDED_WAIT: Final = 30.0
"""What a lease counts for a timeout the policy leaves unbounded (None)."""


MAX_VISITOR_ID: Final = 256
MAX_REASON_TEXT: Final = 500
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class TrackerInputError(ValueError):
    """A request the tracker cannot take (bad visitor id, flow id or report); nothing changed."""


class TokenStep(NamedTuple):
    """What a token request does next: answer at once, or mint (then ``settle_token``)."""

    changed: bool  # the record moved and must be written before anything else happens
    then: TokenReply | FetchToken  # the answer, or the provider call to make first

    @property
    def fetch(self) -> FetchToken | None:
        then = self.then
        return then if isinstance(then, FetchToken) else None


class Report(NamedTuple):
    succeeded: bool
    option_type: str
    reason: FailureReason


def lease_seconds(policy: ActivationPolicy) -> float:
    """How long a flow in flight may stay silent before the next flow may take the visitor.

    One step of the tag's flow: a token request, an activation, and the
    longest backoff between two attempts, plus a grace period. Every step of
    the flow renews it.
    """
    backoff = longest_backoff(policy.retry)
    token = policy.token_timeout or _UNBOUNDED_WAIT
    activation = policy.activation_timeout or _UNBOUNDED_WAIT
    return float(token) + float(activation) + backoff + LEASE_GRACE


def claim_seconds(policy: ActivationPolicy) -> float:
    """How long a claim (``fetching_token``) holds the visitor: the provider's timeout, plus grace.

    Shorter than a whole step, since only the provider call is awaited. It also
    bounds the one doubt a remote store leaves: a claim whose write timed out
    may still have landed, and then holds the visitor this long at most.
    """
    return float(policy.token_timeout or _UNBOUNDED_WAIT) + LEASE_GRACE


def check_visitor_id(visitor_id: object) -> str:
    if not isinstance(visitor_id, str) or not 0 < len(visitor_id) <= MAX_VISITOR_ID:
        raise TrackerInputError(f"visitor id must be a string of 1 to {MAX_VISITOR_ID} characters")
    if _CONTROL.search(visitor_id):
        raise TrackerInputError("visitor id must not contain control characters")
    return visitor_id


def check_flow_id(flow_id: object) -> str:
    if not isinstance(flow_id, str) or not FLOW_ID.fullmatch(flow_id):
        raise TrackerInputError(
            "flow id must be 1 to 128 characters from A-Z, a-z, 0-9, '-' and '_'"
        )
    return flow_id


def parse_report(activation: object) -> Report:
    """Read the tag's callback object ``{"authentication": {"option", "status", "reason"}}``."""
    if not isinstance(activation, Mapping):
        raise TrackerInputError("the report must be the tag's callback object (a mapping)")
    inner = activation.get("authentication")
    if not isinstance(inner, Mapping):
        raise TrackerInputError("the report must have an 'authentication' object")
    status = inner.get("status")
    if status not in (SUCCESS, FAILURE):
        raise TrackerInputError(f"authentication.status must be '{SUCCESS}' or '{FAILURE}'")
    option = inner.get("option")
    option_type = option.get("type") if isinstance(option, Mapping) else None
    if option_type not in (SECURED, ANONYMOUS):
        raise TrackerInputError(f"authentication.option.type must be '{SECURED}' or '{ANONYMOUS}'")
    reason_text = inner.get("reason")
    if reason_text is not None and (
        not isinstance(reason_text, str) or len(reason_text) > MAX_REASON_TEXT
    ):
        raise TrackerInputError(
            f"authentication.reason must be a string of at most {MAX_REASON_TEXT} characters"
        )
    succeeded = status == SUCCESS
    reason = (
        FailureReason.UNKNOWN if reason_text is None else FailureReason.from_message(reason_text)
    )
    return Report(succeeded, str(option_type), reason)


def expire_lease(record: VisitorRecord, now: float) -> bool:
    """Let a silent flow go (the ``lease_expired`` row); True if the record moved."""
    core = record.core
    if core.state.in_flight and record.lease_until is not None and now >= record.lease_until:
        core.fire(Trigger.LEASE_EXPIRED)
        record.lease_until = None
        return True
    return False


def plan_token(
    record: VisitorRecord, flow_id: str, now: float, *, budgeted: bool = True
) -> TokenStep:
    """A token request: start a flow, take the tag's retry, refresh, or refuse.

    Every request that would ask the provider for a token is first checked
    against the visitor's minting budget; the token it may mint is counted in
    the same write that claims the visitor (no extra round trip).
    ``budgeted=False`` when nothing can be minted (nobody is signed in, and
    the policy falls back): such a request costs no budget.
    """
    step = _plan_token(record, flow_id, now, budgeted)
    if (
        budgeted
        and isinstance(step.then, FetchToken)
        and mint_budget(record.core.policy) is not None
    ):
        record.minted.append(now)
    return step


def _plan_token(record: VisitorRecord, flow_id: str, now: float, budgeted: bool) -> TokenStep:
    core = record.core
    changed = expire_lease(record, now)
    state = core.state
    if state is State.AUTHENTICATED:
        if refresh_claimed(record, now):
            return TokenStep(changed, _refused(record))  # one refresh at a time
        wait = budget_wait(record, now) if budgeted else None
        if wait is not None:
            return TokenStep(changed, _over_budget(record, wait))
        # The core decides: a refresh (the visitor stays authenticated), or, once the
        # platform session is over, session_expired and a new, claimed flow.
        effect: Effect | None = core.begin(Trigger.REVERIFY, now)
        if isinstance(effect, FetchToken) and effect.refresh:
            # A refresh claims the visitor the way a first flow does: single-flight across
            # workers (the state stays authenticated; the claim is the flow id and its lease).
            record.flow_id = flow_id
            record.lease_until = now + claim_seconds(core.policy)
            return TokenStep(True, effect)
        _end_flow(record, flow_id)
        return _step_after(record, effect, now)
    if state.in_flight:
        if record.flow_id != flow_id:
            return TokenStep(changed, _refused(record))
        if state is State.FETCHING_TOKEN:
            # This flow's claim stands but its answer never reached the page (the write timed
            # out on our side and landed, say): the same flow claims again and mints once more.
            wait = budget_wait(record, now) if budgeted else None
            if wait is not None:
                return TokenStep(changed, _over_budget(record, wait))
            record.lease_until = now + claim_seconds(core.policy)
            return TokenStep(True, FetchToken(core.attempts + 1, core.policy.token_timeout))
        if state is State.ACTIVATING_ANONYMOUS:  # told to fall back already: say it again
            option = AuthenticationOption.anonymous()
            reply = TokenReply(Answer.ANONYMOUS, state, option, core.reason, core.attempts)
            return TokenStep(changed, reply)
        # The same flow asks again: the tag's attempt failed and it retries.
        wait = budget_wait(record, now) if budgeted else None
        if wait is not None:
            return TokenStep(changed, _over_budget(record, wait))
        # The tag does not say why it retries: record that, not a reason nobody reported.
        effect = core.fire(Trigger.ACTIVATION_FAILED, reason=FailureReason.UNKNOWN)
        if isinstance(effect, BackOff):  # the tag waited already; ask for a fresh token now
            effect = core.fire(Trigger.BACKOFF_ELAPSED)
        return _step_after(record, effect, now)
    if flow_id == record.flow_id or flow_id in record.ended_flows:
        # That page load's flow is over: repeat the answer, mint nothing.
        return TokenStep(changed, _settled_answer(record))
    wait = budget_wait(record, now) if budgeted else None
    if wait is not None:
        return TokenStep(changed, _over_budget(record, wait))
    effect = core.begin(Trigger.ACTIVATE, now)
    _end_flow(record, flow_id)
    return _step_after(record, effect, now)


def refresh_claimed(record: VisitorRecord, now: float) -> bool:
    """An authenticated visitor's refresh is under way (its claim has not lapsed)."""
    return record.lease_until is not None and now < record.lease_until


def budget_wait(record: VisitorRecord, now: float) -> float | None:
    """``None`` if the visitor may be minted a token now, else the seconds until it may.

    A sliding window over the mint times the record keeps: at most ``tokens``
    in any ``seconds``-long span, whatever the boundaries. Times older than
    the window are dropped here, so the record stays within the budget's size.
    """
    budget = mint_budget(record.core.policy)
    if budget is None:
        if record.minted:
            record.minted = []
        return None
    tokens, seconds = budget
    minted = record.minted
    start = now - seconds
    if minted and minted[0] <= start:
        minted = record.minted = [at for at in minted if at > start]
    if len(minted) < tokens:
        return None
    return max(0.0, minted[-tokens] + seconds - now)


def budget_left(record: VisitorRecord, now: float) -> int | None:
    """Tokens the visitor may still be minted in the current window (None: no budget)."""
    budget = mint_budget(record.core.policy)
    if budget is None:
        return None
    tokens, seconds = budget
    return max(0, tokens - sum(1 for at in record.minted if at > now - seconds))


def _over_budget(record: VisitorRecord, wait: float) -> TokenReply:
    core = record.core
    return TokenReply(
        Answer.OVER_BUDGET,
        core.state,
        None,
        FailureReason.MINT_BUDGET_SPENT,
        core.attempts,
        retry_after=wait,
    )


def in_flight_for(record: VisitorRecord, now: float) -> float:
    """Seconds the visitor stays in flight (a flow or a refresh claim); 0: settled."""
    if record.lease_until is not None:
        return max(0.0, record.lease_until - now)
    if record.core.state.in_flight:
        return lease_seconds(record.core.policy)
    return 0.0


def _end_flow(record: VisitorRecord, next_flow: str) -> None:
    """``next_flow`` takes over; the flow before it is remembered as ended."""
    if record.flow_id is not None and record.flow_id != next_flow:
        record.ended_flows = [*record.ended_flows, record.flow_id][-ENDED_FLOWS_LIMIT:]
    record.flow_id = next_flow


def settle_token(
    record: VisitorRecord,
    flow_id: str,
    fetch: FetchToken,
    answer: TokenReceived | TokenFailed,
    now: float,
) -> tuple[bool, TokenReply]:
    """The provider answered ``fetch`` (classified by ``calls.token_answer``): move the record."""
    core = record.core
    if fetch.refresh:
        if (
            core.state is not State.AUTHENTICATED  # logged out (or expired) while minting
            or record.flow_id != flow_id
            or record.lease_until is None  # the claim lapsed, and another took the visitor
        ):
            return False, _gone(record)
        if not core.refreshing and core.refresh() is None:
            return False, _gone(record)
        record.lease_until = None
        effect = core.complete(fetch, answer)
        if isinstance(effect, CallActivator) and effect.on_success is Trigger.TOKEN_REFRESHED:
            # The tag activates the fresh token itself: handing it out completes the refresh.
            core.complete(effect, ACTIVATED)
            return True, TokenReply(Answer.TOKEN, core.state, effect.option, None, core.attempts)
        return True, _answer(record, effect, now)
    if core.state is not State.FETCHING_TOKEN or record.flow_id != flow_id:
        return False, _gone(record)  # the claim was lost meanwhile: this token is never handed out
    effect = core.complete(fetch, answer)
    if isinstance(effect, CallActivator) and effect.option.is_secured:
        record.lease_until = now + lease_seconds(core.policy)
        return True, TokenReply(Answer.TOKEN, core.state, effect.option, None, core.attempts)
    return True, _answer(record, effect, now)


def apply_report(
    record: VisitorRecord, flow_id: str, report: Report, now: float
) -> tuple[bool, ReportReply]:
    """The page reports the tag's outcome: the tag has retried already, so it is final."""
    core = record.core
    changed = expire_lease(record, now)
    state = core.state
    if record.flow_id != flow_id or state not in (State.ACTIVATING, State.ACTIVATING_ANONYMOUS):
        reason = FailureReason.LOGIN_ONGOING if state.in_flight else None
        return changed, ReportReply(False, state, None, reason)
    expected = SECURED if state is State.ACTIVATING else ANONYMOUS
    if report.option_type != expected:
        raise TrackerInputError(
            f"the report is for a {report.option_type} activation, but this flow awaits {expected}"
        )
    effect: Effect | None
    if state is State.ACTIVATING:
        effect = (
            core.fire(Trigger.ACTIVATION_SUCCEEDED)
            if report.succeeded
            else core.fire(Trigger.ACTIVATION_FAILED_FINAL, reason=report.reason)
        )
    elif report.succeeded:
        effect = core.fire(Trigger.ANONYMOUS_SUCCEEDED)
    else:
        effect = core.fire(Trigger.ANONYMOUS_FAILED, reason=report.reason)
    following = None
    if isinstance(effect, CallActivator):  # the policy falls back: the page activates anonymously
        following = effect.option
        record.lease_until = now + lease_seconds(core.policy)
    else:
        record.lease_until = None
    return True, ReportReply(True, core.state, following, core.reason)


def trail_retention(policy: ActivationPolicy) -> float:
    """How long a logged-out visitor's trail stays in the record: one platform session.

    The record itself lives as long in the store; the trail is also capped in
    entries by the snapshot, so it stays bounded however often a visitor returns.
    """
    return session_lifetime(policy)


def apply_logout(record: VisitorRecord, now: float | None = None) -> bool:
    """Forget the visitor (a flow in flight is cancelled first); True if the record moved.

    The last flow id is kept, and the trail (the history of the flows that
    ended, within ``trail_retention``), so a support team still sees what
    happened before the logout; nothing else.
    """
    core = record.core
    trail = list(core._history or ())
    changed = False
    if core.state.in_flight:
        core.cancel()
        changed = True
        if core.state is State.UNAUTHENTICATED:
            # The cancel row ended the flow, but the core keeps its history (the trail,
            # now with that row: taken once, not again below) and its attempts, reason
            # and token fingerprint: forgotten, as the logout row forgets them.
            trail = list(core._history or ())
            core.forget()
    logged_out = None
    if core.state is not State.UNAUTHENTICATED:
        logged_out = core.state
        core.fire(Trigger.LOGOUT)
        changed = True
    if record.lease_until is not None:
        record.lease_until = None
        changed = True
    if changed and trail:
        oldest = (time.time() if now is None else now) - trail_retention(core.policy)
        kept = [entry for entry in trail if (entry.at or 0.0) >= oldest]
        if logged_out is not None:  # the trail says where it ended (the core keeps no such row)
            kept.append(
                HistoryEntry(logged_out, State.UNAUTHENTICATED, Trigger.LOGOUT, 0, None, core.since)
            )
        joined = kept + list(core._history or ())
        core._history = joined[-HISTORY_LIMIT:] or None
    return changed


def _step_after(record: VisitorRecord, effect: Effect | None, now: float) -> TokenStep:
    if isinstance(effect, FetchToken):
        record.lease_until = now + claim_seconds(record.core.policy)
        return TokenStep(True, effect)
    return TokenStep(True, _answer(record, effect, now))


def _answer(record: VisitorRecord, effect: Effect | None, now: float) -> TokenReply:
    """The page's answer once the policy has decided: fall back, or do not activate."""
    core = record.core
    if isinstance(effect, CallActivator):
        record.lease_until = now + lease_seconds(core.policy)
        return TokenReply(Answer.ANONYMOUS, core.state, effect.option, core.reason, core.attempts)
    assert effect is None or isinstance(effect, Finish)
    record.lease_until = None
    return TokenReply(Answer.DO_NOT_ACTIVATE, core.state, None, core.reason, core.attempts)


def _refused(record: VisitorRecord) -> TokenReply:
    core = record.core
    return TokenReply(Answer.REFUSED, core.state, None, FailureReason.LOGIN_ONGOING, core.attempts)


def _settled_answer(record: VisitorRecord) -> TokenReply:
    core = record.core
    if core.state is State.ANONYMOUS:
        return TokenReply(
            Answer.ANONYMOUS,
            core.state,
            AuthenticationOption.anonymous(),
            core.reason,
            core.attempts,
        )
    reason = core.reason or FailureReason.CANCELLED
    return TokenReply(Answer.DO_NOT_ACTIVATE, core.state, None, reason, core.attempts)


def _gone(record: VisitorRecord) -> TokenReply:
    if record.core.state.in_flight:
        return _refused(record)
    reason = FailureReason.CANCELLED
    return TokenReply(Answer.DO_NOT_ACTIVATE, record.core.state, None, reason, record.core.attempts)
