"""The tag-driven driver's two faces: ``AsyncActivationTracker`` and ``ActivationTracker``.

Every event is load -> one step of the table -> compare-and-set write,
retried on conflict (a bounded number of times), so that however many
workers share the store, one visitor moves one step at a time. A token
request *claims* the visitor (writes ``fetching_token`` with this flow id)
before the host's provider is called: another tab or worker then reads the
claim and is refused without minting anything.

Round trips: a token request for a visitor this tracker has not seen is
written optimistically, as if new (a conflict returns what is there, so
guessing wrong costs nothing extra); a claim and its settlement are then two
writes. A decision that writes nothing is only ever taken on freshly loaded
data.

The flow is written once, as generators (httpx's ``auth_flow`` pattern): a
flow yields what it needs done — load a key, compare-and-set it, call the
token provider, await what async listeners returned — and is sent the
answer. Each face drives a flow in a few lines, its own way (``await`` or
not); no rule is written twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any, Final, Generic, NamedTuple, TypeVar, cast

from statemachine.engine._core import ActivationCore
from statemachine.engine._effects import Outcome
from statemachine.engine.snapshots import SnapshotError
from statemachine.hostcalls._calls import (
    TokenProvider,
    call_async,
    call_blocking_timed,
    is_async_callable,
    token_answer,
)
from statemachine.hostcalls.workers import WorkerPool
from statemachine.protocol.options import AuthenticationOption
from statemachine.protocol.policy import (
    ActivationPolicy,
    Fallback,
    checked_policy,
    session_lifetime,
)
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.replies import Answer, ReportReply, TokenReply, TrackerView
from statemachine.signals import logs
from statemachine.signals.events import Listener, Listeners, await_listeners, run_listeners
from statemachine.stores.base import AsyncStore, DamagedRecord, Store, StoreError, Versioned
from statemachine.stores.memory import MemoryStore
from statemachine.tracking import _record as records
from statemachine.tracking._record import VisitorRecord
from statemachine.tracking._rules import (
    TokenStep,
    apply_logout,
    apply_report,
    budget_left,
    check_flow_id,
    check_visitor_id,
    in_flight_for,
    lease_seconds,
    parse_report,
    plan_token,
    settle_token,
)

MAX_CONFLICTS: Final = 16
"""Conditional writes one event may retry before the store counts as too contended."""

HINTS: Final = 4_096
"""Versions remembered per tracker, to write a known visitor in one round trip."""

BUDGET_LOG_INTERVAL: Final = 60.0
"""Seconds between two log lines about one visitor's spent budget: a hammering is one line."""

R = TypeVar("R")
S = TypeVar("S")
Apply = Callable[[VisitorRecord, float], tuple[bool, R]]

_ABSENT: Final = Versioned(0, "")

REPAIRED: Final = "activation.record_repaired"


# -- what a flow asks its driver to do -------------------------------------------
class Load(NamedTuple):
    """Read ``key``; the driver sends back ``Versioned | None``."""

    key: str


class CompareAndSet(NamedTuple):
    """Write ``data`` if ``key`` is at ``expected``; the driver sends back ``(ok, current)``.

    ``now`` is the store-clock time the step was decided at (None: the
    tracker runs on a clock of its own), for the store to check against its own.
    ``in_flight_for``: seconds the visitor stays in flight (0: settled), so a
    store that makes room by dropping visitors drops settled ones only.
    """

    key: str
    expected: int
    data: str
    ttl: float
    now: float | None = None
    in_flight_for: float = 0.0


class CallProvider(NamedTuple):
    """Call the host's token provider under ``timeout``; the driver sends back an ``Outcome``."""

    provider: TokenProvider
    is_async: bool
    timeout: float | None


class Publish(NamedTuple):
    """Await (or run) what async listeners returned for a committed step; nothing is sent back."""

    pending: list[Any]


Request = Load | CompareAndSet | CallProvider | Publish
Flow = Generator[Request, Any, R]


class _Tracker(Generic[S]):
    """What both faces share: the policy, the store, the clock, the records and the flows."""

    def __init__(
        self,
        policy: ActivationPolicy | None = None,
        store: S | None = None,
        *,
        clock: Callable[[], float] | None = None,
        workers: WorkerPool | None = None,
    ) -> None:
        policy = checked_policy(policy)
        self.policy = policy
        # The embedded default serves both faces: MemoryStore is a Store and an AsyncStore.
        self.store: S = cast(S, MemoryStore()) if store is None else store
        # Leases are judged on the store's clock when it has one (``now()``: Redis's TIME as
        # last measured, the memory store's own), so a worker's skew cannot open a visitor
        # twice; every write says when it was decided, and the store refuses one decided too
        # far from its own clock. An explicit ``clock`` (tests, simulations) replaces it.
        store_now = getattr(self.store, "now", None)
        self._store_clock = clock is None and callable(store_now)
        self._clock: Callable[[], float] = (
            clock if clock is not None else store_now if callable(store_now) else time.time
        )
        self._workers = workers
        self._ttl = max(session_lifetime(policy), lease_seconds(policy))
        # key -> what this tracker last wrote there: its version and text, and (when kept) the
        # record that text reads back as, so reading our own write back needs no parsing.
        self._hints: OrderedDict[str, tuple[Versioned, records.Saved | None]] = OrderedDict()
        self._hints_lock = threading.Lock()
        self._listeners = Listeners()
        self.budget_refusals = 0  # token requests answered 429: the visitor's budget was spent
        self._refusal_hooks: tuple[tuple[Listener, Callable[[str], Any]], ...] = ()
        self._budget_logged: OrderedDict[str, float] = OrderedDict()  # visitor -> last log line

    def __repr__(self) -> str:
        return f"{type(self).__name__}(policy={self.policy.name!r}, store={self.store!r})"

    def add_listener(self, listener: Listener) -> Listener:
        """Call ``listener`` (sync or async) with a ``TransitionEvent`` per committed transition.

        Events are published only once the store has accepted the step that
        caused them: a step retried after a conflict is never heard twice.
        A listener that raises is logged and changes nothing.
        """
        self._listeners.add(listener)
        refused = getattr(listener, "budget_refused", None)
        if callable(refused):  # ActivationMetrics: it counts budget refusals too
            self._refusal_hooks = (*self._refusal_hooks, (listener, refused))
        watch = getattr(listener, "watch", None)
        if callable(watch):  # ActivationMetrics: it exports the memory store's drops
            watch(self)
        return listener

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)
        self._refusal_hooks = tuple(h for h in self._refusal_hooks if h[0] is not listener)

    # -- the flows (each face drives them) ---------------------------------
    def _token_flow(
        self, visitor_id: str, flow: str, token_provider: TokenProvider | None
    ) -> Flow[TokenReply]:
        """The page's tag asks for a token: claim (or refuse), mint, settle.

        ``token_provider`` is ``None`` when nobody is signed in: under a policy
        that blocks, that is answered without touching the store.
        """
        key, flow = check_visitor_id(visitor_id), check_flow_id(flow)
        if token_provider is None:
            unsigned = self._unsigned()
            if unsigned is not None:
                return unsigned
            token_provider = _no_token  # nothing can be minted: no budget is spent
        if not callable(token_provider):
            raise TypeError("token_provider must be a callable taking no argument")
        budgeted = token_provider is not _no_token
        step, current, claimed = yield from self._step(
            key,
            lambda r, now: _planned(plan_token(r, flow, now, budgeted=budgeted)),
            hint=self._hint(key),
            keep=False,  # a claim: its settlement follows and is the record kept
        )
        fetch = step.then
        if isinstance(fetch, TokenReply):
            return self._answered(key, fetch, claimed.core.session_id)
        outcome: Outcome = yield CallProvider(
            token_provider, is_async_callable(token_provider), fetch.timeout
        )
        answer = token_answer(outcome, claimed.core)

        def settle(record: VisitorRecord, now: float) -> tuple[bool, TokenReply]:
            return settle_token(record, flow, fetch, answer, now)

        reply, _, _ = yield from self._step(key, settle, hint=current, reuse=claimed)
        return reply

    def _report_flow(self, visitor_id: str, flow: str, activation: object) -> Flow[ReportReply]:
        key, flow = check_visitor_id(visitor_id), check_flow_id(flow)
        report = parse_report(activation)
        reply, _, _ = yield from self._step(key, lambda r, now: apply_report(r, flow, report, now))
        return reply

    def _logout_flow(self, visitor_id: str) -> Flow[TrackerView | None]:
        key = check_visitor_id(visitor_id)
        try:
            _, current, _ = yield from self._step(key, lambda r, now: (apply_logout(r, now), None))
        except DamagedRecord:
            current = yield from self._repair(key)
        return self._view(current, key)

    def _repair(self, key: str) -> Flow[Versioned | None]:
        """A logout overwrites a record nobody can read (damaged, or an unknown format)."""
        for _ in range(MAX_CONFLICTS):
            damaged: Versioned | None = yield Load(key)
            if damaged is None:
                return None
            try:
                self._record(damaged, key)
            except DamagedRecord:
                pass
            else:  # repaired by someone else meanwhile: log out as usual
                _, current, _ = yield from self._step(
                    key, lambda r, now: (apply_logout(r, now), None)
                )
                return current
            fresh = VisitorRecord(ActivationCore(self.policy, clock=self._clock))
            decided = self._clock() if self._store_clock else None
            written = CompareAndSet(key, damaged.version, self._dump(fresh), self._ttl, decided)
            ok, current = yield written
            if ok:
                logs.emit(logs.PROXY.warning, REPAIRED, reason="damaged record replaced on logout")
                self._remember(key, current, fresh)
                repaired: Versioned | None = current
                return repaired
        raise StoreError(f"gave up after {MAX_CONFLICTS} conflicting writes")

    def _step(
        self,
        key: str,
        apply: Apply[R],
        hint: Versioned | None = None,
        reuse: VisitorRecord | None = None,
        keep: bool = True,
    ) -> Flow[tuple[R, Versioned | None, VisitorRecord]]:
        """Load, apply one step, compare-and-set; again from what is there on a conflict.

        ``hint`` is a guess of what is stored (checked by the write); a decision
        that writes nothing is taken only on freshly loaded data. ``reuse`` is
        the record this tracker has just written, to skip parsing it back.
        ``keep``: remember the written record too (``records.saved``), so the
        next step reads it back without parsing; a claim, whose record the
        flow goes on with at once, is not worth it.
        """
        current = hint
        fresh = False
        if current is None:
            current = yield Load(key)
            fresh = True
        for _ in range(MAX_CONFLICTS):
            record = reuse if reuse is not None else self._record(current, key)
            reuse = None  # only for the first try: after a conflict, what the store says
            now = self._clock()
            changed, result = apply(record, now)
            if not changed:
                if fresh:
                    return result, current, record
                loaded = yield Load(key)
                if loaded == current:  # the guess was fresh: the decision stands as taken
                    return result, current, record
                current, fresh = loaded, True
                continue
            expected = 0 if current is None else current.version
            decided = now if self._store_clock else None
            ok, current = yield CompareAndSet(
                key,
                expected,
                self._dump(record),
                self._ttl,
                decided,
                in_flight_for(record, now),
            )
            fresh = True
            if ok:  # publish what the store accepted; a conflict drops the record and its events
                self._remember(key, current, record if keep else None)
                pending = self._listeners.publish(record.core.take_events())
                if pending:
                    yield Publish(pending)
                return result, current, record
        raise StoreError(f"gave up after {MAX_CONFLICTS} conflicting writes")

    # -- records ---------------------------------------------------------
    def _record(self, current: Versioned | None, key: str | None = None) -> VisitorRecord:
        """The record ``current`` holds; every field of what the store says is checked.

        Unless it is exactly what this tracker last wrote for ``key`` (the same
        version and the same text, held since the write): that text was made
        from a record held here, so it is rebuilt from that instead of parsed.
        """
        if current is None or current.version == 0:
            return VisitorRecord(ActivationCore(self.policy, clock=self._clock))
        known = None if key is None else self._hints.get(key)
        if known is not None and known[1] is not None and known[0] == current:
            rebuilt = records.rebuild(known[1], self.policy, self._clock)
            if rebuilt is not None:
                return rebuilt
        try:
            data = json.loads(current.data)
        except (ValueError, RecursionError):  # nested past the parser's depth: not a record
            raise DamagedRecord("the stored visitor is not valid JSON") from None
        try:
            return records.load(data, self.policy, self._clock)
        except SnapshotError as error:
            raise DamagedRecord(f"the stored visitor is damaged: {error}") from None

    def _dump(self, record: VisitorRecord) -> str:
        return records.dump_text(record)

    def _view(self, current: Versioned | None, key: str) -> TrackerView | None:
        if current is None:
            return None
        record = self._record(current, key)
        core = record.core
        return TrackerView(
            session_id=core.session_id,
            state=core.state,
            attempts=core.attempts,
            reason=core.reason,
            history=core.history,
            flow_id=record.flow_id,
            since=core.since,
            lease_until=record.lease_until,
            token_fingerprint=core.token_fingerprint,
            policy=str(self.policy.name),
            authenticated_until=core.authenticated_until,
            mint_budget_left=budget_left(record, self._clock()),
        )

    def _hint(self, key: str) -> Versioned:
        """What this tracker last wrote for ``key`` (or "absent"): a guess that CAS checks."""
        known = self._hints.get(key)
        return _ABSENT if known is None else known[0]

    def _remember(
        self, key: str, current: Versioned | None, record: VisitorRecord | None = None
    ) -> None:
        """``current`` is what this tracker wrote for ``key``, from ``record`` if given."""
        kept = None if record is None else records.saved(record)
        with self._hints_lock:
            hints = self._hints
            if current is None:
                hints.pop(key, None)
                return
            hints[key] = (current, kept)
            hints.move_to_end(key)
            if len(hints) > HINTS:
                hints.popitem(last=False)

    def _unsigned(self) -> TokenReply | None:
        """The answer for a visitor nobody signed in, if it needs no record (defensive policy).

        Nobody can mint for them, and the policy would block the flow: say so
        without a read or a write, so a flood of forged visitors costs the
        store nothing. A policy that falls back runs the flow (its anonymous
        activation is tracked like any other).
        """
        if Fallback(self.policy.on_token_failure) is Fallback.BLOCK:
            return TokenReply(Answer.DO_NOT_ACTIVATE, None, None, FailureReason.TOKEN_UNAVAILABLE)
        return None

    def _answered(self, key: str, reply: TokenReply, session_id: str) -> TokenReply:
        """The planned answer; one refused for its budget is counted and logged (once a minute).

        The line names the visitor by its session id, as its transition lines do
        (the host's visitor id is a cookie's value: it stays out of logs).
        """
        if reply.answer is Answer.OVER_BUDGET:
            with self._hints_lock:
                self.budget_refusals += 1
                now = time.monotonic()
                logged = self._budget_logged.get(key)
                quiet = logged is None or now - logged >= BUDGET_LOG_INTERVAL
                if quiet:
                    self._budget_logged[key] = now
                    self._budget_logged.move_to_end(key)
                    if len(self._budget_logged) > HINTS:
                        self._budget_logged.popitem(last=False)
            for _, refused in self._refusal_hooks:
                try:
                    refused(str(self.policy.name))
                except Exception as error:  # noqa: BLE001 - a listener's failure changes nothing
                    failed = type(error).__name__
                    logs.emit(logs.PROXY.error, logs.LISTENER_ERROR, error_type=failed)
            if quiet:
                logs.emit(
                    logs.PROXY.warning,
                    logs.BUDGET_SPENT,
                    session_id=session_id,
                    policy=str(self.policy.name),
                    retry_after=reply.retry_after,
                )
        return reply

    def _store_down(self, error: StoreError) -> TokenReply:
        """The policy's answer when the store cannot hold the visitor: nothing was handed out."""
        logs.emit(logs.PROXY.error, logs.STORE_ERROR, error=str(error))
        if Fallback(self.policy.on_token_failure) is Fallback.ANONYMOUS:
            return TokenReply(
                Answer.ANONYMOUS, None, AuthenticationOption.anonymous(), FailureReason.SERVER_ERROR
            )
        return TokenReply(Answer.DO_NOT_ACTIVATE, None, None, FailureReason.SERVER_ERROR)


class AsyncActivationTracker(_Tracker[AsyncStore]):
    """Follows the tag's activation for asyncio hosts (Starlette, FastAPI, aiohttp)."""

    async def token_request(
        self, visitor_id: str, flow: str, token_provider: TokenProvider | None
    ) -> TokenReply:
        """The page's tag asks for a token: start a flow, take its retry, refresh, or refuse."""
        try:
            return await self._drive(self._token_flow(visitor_id, flow, token_provider))
        except StoreError as error:
            return self._store_down(error)

    async def report(self, visitor_id: str, flow: str, activation: object) -> ReportReply:
        """The page reports the tag's callback object; it ends the flow (the tag has retried)."""
        return await self._drive(self._report_flow(visitor_id, flow, activation))

    async def logout(self, visitor_id: str) -> TrackerView | None:
        """Forget the visitor's activation; a flow in flight is cancelled."""
        return await self._drive(self._logout_flow(visitor_id))

    async def view(self, visitor_id: str) -> TrackerView | None:
        """The visitor as the store holds it, or None if unknown."""
        key = check_visitor_id(visitor_id)
        return self._view(await self.store.aload(key), key)

    async def _drive(self, flow: Flow[R]) -> R:
        store = self.store
        answer: Any = None
        try:
            while True:
                request = flow.send(answer)
                if type(request) is CompareAndSet:
                    if request.now is None:
                        answer = await store.acompare_and_set(
                            *request[:4], in_flight_for=request.in_flight_for
                        )
                    else:
                        clocked: Any = store  # a store with a clock takes the decision time
                        answer = await clocked.acompare_and_set(
                            *request[:4], now=request.now, in_flight_for=request.in_flight_for
                        )
                elif type(request) is Load:
                    answer = await store.aload(request.key)
                elif type(request) is CallProvider:
                    answer = await call_async(
                        request.provider, request.is_async, (), request.timeout, self._workers
                    )
                else:
                    assert type(request) is Publish
                    await await_listeners(request.pending)
                    answer = None
        except StopIteration as done:
            result: R = done.value
            return result


class ActivationTracker(_Tracker[Store]):
    """The same tracker for blocking hosts (WSGI, Django, Flask); safe across threads."""

    def token_request(
        self, visitor_id: str, flow: str, token_provider: TokenProvider | None
    ) -> TokenReply:
        try:
            return self._drive(self._token_flow(visitor_id, flow, token_provider))
        except StoreError as error:
            return self._store_down(error)

    def report(self, visitor_id: str, flow: str, activation: object) -> ReportReply:
        return self._drive(self._report_flow(visitor_id, flow, activation))

    def logout(self, visitor_id: str) -> TrackerView | None:
        return self._drive(self._logout_flow(visitor_id))

    def view(self, visitor_id: str) -> TrackerView | None:
        key = check_visitor_id(visitor_id)
        return self._view(self.store.load(key), key)

    def _drive(self, flow: Flow[R]) -> R:
        store = self.store
        answer: Any = None
        try:
            while True:
                request = flow.send(answer)
                if type(request) is CompareAndSet:
                    if request.now is None:
                        answer = store.compare_and_set(
                            *request[:4], in_flight_for=request.in_flight_for
                        )
                    else:
                        clocked: Any = store  # a store with a clock takes the decision time
                        answer = clocked.compare_and_set(
                            *request[:4], now=request.now, in_flight_for=request.in_flight_for
                        )
                elif type(request) is Load:
                    answer = store.load(request.key)
                elif type(request) is CallProvider:
                    answer = call_blocking_timed(
                        request.provider, request.is_async, (), request.timeout, self._workers
                    )
                else:
                    assert type(request) is Publish
                    run_listeners(request.pending)
                    answer = None
        except StopIteration as done:
            result: R = done.value
            return result


def _planned(step: TokenStep) -> tuple[bool, TokenStep]:
    return step.changed, step


def _no_token() -> None:
    """The provider for a visitor nobody signed in, under a policy that falls back."""
    return
