"""The two faces of one core: ``AsyncActivationSession`` and ``ActivationSession``.

As httpx pairs ``AsyncClient`` with ``Client``, both expose the same names and
semantics; they differ only in how they wait. Every rule lives in the core.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Self

from statemachine.engine import snapshots
from statemachine.engine._core import ActivationCore
from statemachine.engine._effects import (
    ELAPSED,
    Answer,
    BackOff,
    CallActivator,
    Effect,
    FetchToken,
    Finish,
    Outcome,
)
from statemachine.hostcalls._calls import (
    AnsweredCoroutine,
    Callback,
    activation_answer,
    call_async,
    call_blocking,
    call_pooled,
    is_async_callable,
    notify_async,
    notify_blocking,
    token_answer,
)
from statemachine.hostcalls._calls import (
    TokenProvider as TokenProvider,  # re-exported: hosts import it here
)
from statemachine.hostcalls.activator import Activator
from statemachine.hostcalls.workers import Wake, WorkerPool
from statemachine.protocol.options import AuthenticationOption
from statemachine.protocol.policy import (
    MAX_LIFETIME,
    ActivationPolicy,
    check_seconds,
    checked_policy,
)
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.results import FAILURE, ActivationResult, HistoryEntry
from statemachine.protocol.states import State, Trigger
from statemachine.signals.events import Listener, Listeners, await_listeners


class _Session:
    """What both faces share: validation, the core, and read-only views of it."""

    __slots__ = (
        "_activate",
        "_activator_is_async",
        "_core",
        "_listeners",
        "_provider",
        "_provider_is_async",
        "_refresh_ahead",
        "_shared",
        "_workers",
    )

    def __init__(
        self,
        token_provider: TokenProvider,
        activator: Activator,
        policy: ActivationPolicy | None = None,
        *,
        session_id: str | None = None,
        workers: WorkerPool | None = None,
        refresh_ahead: float | None = None,
    ) -> None:
        if not callable(token_provider):
            raise TypeError(
                "token_provider must be a callable taking no argument and returning a token, "
                f"got {type(token_provider).__name__}"
            )
        activate = getattr(activator, "activate", None)
        if not callable(activate):
            raise TypeError(
                f"activator must have an activate(option) method, got {type(activator).__name__}"
            )
        policy = checked_policy(policy)
        self._provider = token_provider
        self._provider_is_async = is_async_callable(token_provider)
        self._activate = activate
        self._activator_is_async = is_async_callable(activate)
        if refresh_ahead is not None:
            check_seconds("refresh_ahead", refresh_ahead, optional=False, high=MAX_LIFETIME)
        self._core = ActivationCore(policy, session_id)
        self._listeners = Listeners(one_session=True)
        self._workers = workers
        self._refresh_ahead = refresh_ahead
        self._shared: Any = None  # the refresh in progress, which other callers join
        self._init_face()

    def _init_face(self) -> None:
        """Each face's own waiting machinery (task handle, or lock and flow control)."""

    @property
    def state(self) -> State:
        return self._core.state

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        return self._core.history

    @property
    def session_id(self) -> str:
        return self._core.session_id

    @property
    def authenticated_until(self) -> float | None:
        """Epoch seconds when the platform session ends; None unless authenticated."""
        return self._core.authenticated_until

    def add_listener(self, listener: Listener) -> Listener:
        """Call ``listener`` (sync or async) with a ``TransitionEvent`` for every transition.

        A listener that raises is logged (``activation.listener_error``) and
        changes nothing; async ones are awaited by the flow that caused them.
        """
        return self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _refresh_wanted(self, trigger: Trigger) -> bool:
        """``reverify`` while authenticated, or ``activate`` within ``refresh_ahead`` of expiry."""
        return self._core.refreshes(trigger, ahead=self._refresh_ahead)

    @property
    def policy(self) -> ActivationPolicy:
        return self._core.policy

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe dict of this session's state, without the token (see ``restore``)."""
        return snapshots.dump(self._core)

    @classmethod
    def restore(
        cls,
        snapshot: object,
        token_provider: TokenProvider,
        activator: Activator,
        policy: ActivationPolicy | None = None,
        *,
        workers: WorkerPool | None = None,
    ) -> Self:
        """A session that goes on from ``snapshot``; raises ``SnapshotError`` if it is damaged.

        A session always restores at rest: a snapshot taken mid-flow comes back
        through the table's ``cancel`` row (``unauthenticated``, reason
        CANCELLED), since the provider or activator call it was waiting on
        belonged to another process. The token itself never travels: a restored
        ``authenticated`` session knows its fingerprint only.
        """
        session = cls(token_provider, activator, policy, workers=workers)
        core = snapshots.load(snapshot, session._core.policy)
        session._core = core
        core.cancel()
        session._listeners.publish(core.take_events())  # only the log line listens yet
        return session

    def diagram(self) -> str:
        """Mermaid text of this session's machine with its state and path highlighted."""
        from statemachine.tools.diagrams import session_mermaid

        text: str = session_mermaid(self._core.policy, self._core.state, self._core.history)
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(session_id={self.session_id!r}, state={self.state.value!r}, "
            f"policy={self.policy.name!r})"
        )


class AsyncActivationSession(_Session):
    """Activation for asyncio hosts.

    Async providers and activators are awaited under the policy's timeouts;
    plain callables run in a worker thread so they can neither block the
    event loop nor escape the timeouts.
    """

    __slots__ = ("_cancelled_by_us", "_task")

    def _init_face(self) -> None:
        self._task: asyncio.Task[Any] | None = None
        self._cancelled_by_us = False

    def activate(self, callback: Callback | None = None) -> AnsweredCoroutine[ActivationResult]:
        """Run a secured flow to its end; ``callback`` gets the result exactly once.

        (A coroutine: ``await`` it. Even a task cancelled before its first step
        answers the callback, with a CANCELLED result.)
        """
        return self._answered(Trigger.ACTIVATE, callback)

    def activate_anonymously(
        self, callback: Callback | None = None
    ) -> AnsweredCoroutine[ActivationResult]:
        return self._answered(Trigger.ACTIVATE_ANONYMOUSLY, callback)

    def reverify(self, callback: Callback | None = None) -> AnsweredCoroutine[ActivationResult]:
        """The platform session expired: verify the visitor's identity again."""
        return self._answered(Trigger.REVERIFY, callback)

    def _answered(
        self, trigger: Trigger, callback: Callback | None
    ) -> AnsweredCoroutine[ActivationResult]:
        async def early(error: BaseException) -> ActivationResult:
            await notify_async(callback, _cancelled(self._core), self._core.logger)
            raise error

        return AnsweredCoroutine(lambda: self._run(trigger, callback), early)

    async def logout(self) -> None:
        """Forget the visitor. A no-op when nothing is activated; refused while a flow runs."""
        if self._core.state is not State.UNAUTHENTICATED:
            self._core.fire(Trigger.LOGOUT)
            await self._publish()

    def cancel(self) -> bool:
        """Cancel the running flow: its ``activate`` returns a CANCELLED result."""
        task = self._task
        if task is None or task.done():
            return False
        if self._cancelled_by_us:  # asked already: a second task.cancel() would escape us
            return True
        self._cancelled_by_us = True
        return task.cancel()

    async def _run(self, trigger: Trigger, callback: Callback | None) -> ActivationResult:
        if self._refresh_wanted(trigger):
            return await self._single_flight(callback)
        return await self._flow(trigger, callback)

    async def _single_flight(self, callback: Callback | None) -> ActivationResult:
        """However many callers ask for a refresh at once, one runs and all get its result."""
        shared: asyncio.Future[ActivationResult] | None = self._shared
        if shared is not None:
            result = await asyncio.shield(shared)
            await notify_async(callback, result, self._core)
            return result
        shared = self._shared = asyncio.get_running_loop().create_future()
        try:
            result = await self._flow(Trigger.REVERIFY, callback)
        except BaseException:
            shared.set_result(_cancelled(self._core))  # the others get an answer, not our error
            raise
        finally:
            self._shared = None
        if not shared.done():
            shared.set_result(result)
        return result

    async def _publish(self) -> None:
        events = self._core.take_events()
        if events:
            pending = self._listeners.publish(events)
            if pending:
                await await_listeners(pending)

    async def _flow(self, trigger: Trigger, callback: Callback | None) -> ActivationResult:
        core = self._core
        effect: Effect | None = core.begin(trigger)
        if isinstance(effect, Finish):  # refused: the running flow is untouched
            await self._publish()
            await notify_async(callback, effect.result, core)
            return effect.result
        # In flight from here: every await below (async listeners included) is a point
        # where a cancellation must bring the machine back to rest.
        self._task = asyncio.current_task()
        self._cancelled_by_us = False
        try:
            await self._publish()
            while not isinstance(effect, Finish):
                assert effect is not None  # only logout yields no effect
                effect = core.complete(effect, await self._perform(effect))
                if isinstance(effect, Finish):
                    # Ended: a cancel() from now on finds no flow and answers False, so
                    # True always means CANCELLED (listeners may still be awaited below).
                    self._task = None
                await self._publish()
        except asyncio.CancelledError:
            finish = core.cancel()
            ours = self._cancelled_by_us
            if finish is not None:
                await notify_async(callback, finish.result, core)
            elif isinstance(effect, Finish):  # cancelled while listeners heard the outcome
                await notify_async(callback, effect.result, core)
            task = asyncio.current_task()
            if ours and finish is not None and task is not None and task.uncancel() == 0:
                await self._publish()
                return finish.result
            _discard(self._listeners.publish(core.take_events()))  # cancelled for good
            raise
        except BaseException:
            core.cancel()  # never leave the machine in flight
            _discard(self._listeners.publish(core.take_events()))
            raise
        finally:
            if self._task is asyncio.current_task():  # not the next flow's, begun meanwhile
                self._task = None
        await notify_async(callback, effect.result, core)
        return effect.result

    async def _perform(self, effect: Effect) -> Answer:
        if isinstance(effect, BackOff):
            await asyncio.sleep(effect.delay)
            return ELAPSED
        if isinstance(effect, FetchToken):
            outcome = await call_async(
                self._provider, self._provider_is_async, (), effect.timeout, self._workers
            )
            return token_answer(outcome, self._core)
        assert isinstance(effect, CallActivator)
        outcome = await call_async(
            self._activate,
            self._activator_is_async,
            (effect.option,),
            effect.timeout,
            self._workers,
        )
        return activation_answer(outcome, self._core)


class _SharedRefresh:
    """The refresh one thread runs for all: the others wait for its result."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: ActivationResult | None = None


def _discard(pending: list[Any] | None) -> None:
    """Drop async listeners' calls a cancelled flow will not await, without a warning."""
    for call in pending or ():
        if inspect.iscoroutine(call):
            call.close()


def _cancelled(core: ActivationCore) -> ActivationResult:
    return ActivationResult(
        FAILURE, AuthenticationOption.secured(None), core.state, FailureReason.CANCELLED, 0
    )


class _FlowControl:
    """Lets ``cancel()`` on another thread wake a blocking flow wherever it waits."""

    __slots__ = ("cancelled", "wake")

    def __init__(self) -> None:
        self.cancelled = False
        self.wake: Wake | None = None  # made only when the flow has to wait

    def fresh_wake(self) -> Wake:
        self.wake = Wake()
        return self.wake


class ActivationSession(_Session):
    """Activation for blocking hosts; safe to share between threads.

    A lock guards every move of the core, never the I/O, so a second thread's
    ``activate`` is answered ``LOGIN_ONGOING`` at once instead of queueing.
    With a timeout set, host calls run on a daemon thread the flow can stop
    waiting for; a call that hangs forever is abandoned there, not joined.
    """

    __slots__ = ("_control", "_lock")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return snapshots.dump(self._core)

    def _init_face(self) -> None:
        self._lock = threading.Lock()
        self._control: _FlowControl | None = None

    def activate(self, callback: Callback | None = None) -> ActivationResult:
        """Run a secured flow to its end; ``callback`` gets the result exactly once."""
        return self._run(Trigger.ACTIVATE, callback)

    def activate_anonymously(self, callback: Callback | None = None) -> ActivationResult:
        return self._run(Trigger.ACTIVATE_ANONYMOUSLY, callback)

    def reverify(self, callback: Callback | None = None) -> ActivationResult:
        """The platform session expired: verify the visitor's identity again."""
        return self._run(Trigger.REVERIFY, callback)

    def logout(self) -> None:
        """Forget the visitor. A no-op when nothing is activated; refused while a flow runs."""
        with self._lock:
            if self._core.state is State.UNAUTHENTICATED:
                return
            self._core.fire(Trigger.LOGOUT)
            events = self._core.take_events()
        self._listeners.publish_blocking(events)

    def cancel(self) -> bool:
        """Cancel the running flow (from any thread): its ``activate`` returns CANCELLED."""
        with self._lock:
            control = self._control
            if control is None:
                return False
            control.cancelled = True
            if control.wake is not None:
                control.wake.set()
            return True

    def _run(self, trigger: Trigger, callback: Callback | None) -> ActivationResult:
        result = self._single_flight() if self._refresh_wanted(trigger) else self._flow(trigger)
        notify_blocking(callback, result, self._core)
        return result

    def _single_flight(self) -> ActivationResult:
        """However many threads ask for a refresh at once, one runs and all get its result."""
        with self._lock:
            shared: _SharedRefresh | None = self._shared
            owner = shared is None
            if shared is None:
                shared = self._shared = _SharedRefresh()
        if not owner:
            shared.done.wait()
            assert shared.result is not None
            return shared.result
        try:
            result = self._flow(Trigger.REVERIFY)
        except BaseException:
            shared.result = _cancelled(self._core)
            raise
        else:
            shared.result = result
        finally:
            with self._lock:
                self._shared = None
            shared.done.set()
        return result

    def _flow(self, trigger: Trigger) -> ActivationResult:
        core = self._core
        with self._lock:
            effect: Effect | None = core.begin(trigger)
            if not isinstance(effect, Finish):
                control = self._control = _FlowControl()
            events = core.take_events()
        if isinstance(effect, Finish):  # refused: the running flow is untouched
            self._listeners.publish_blocking(events)
            return effect.result
        try:
            # Inside the try: a listener raising a BaseException on the first step must
            # not leave the machine in flight.
            self._listeners.publish_blocking(events)
            while not isinstance(effect, Finish):
                assert effect is not None
                answer = None if control.cancelled else self._perform(effect, control)
                with self._lock:
                    if control.cancelled or answer is None:
                        effect = core.cancel()
                    else:
                        effect = core.complete(effect, answer)
                    if isinstance(effect, Finish):
                        # In the same critical section: a cancel() from now on finds no
                        # flow and answers False, so True always means CANCELLED.
                        self._control = None
                    events = core.take_events()
                self._listeners.publish_blocking(events)
        except BaseException:
            with self._lock:
                core.cancel()  # never leave the machine in flight
                events = core.take_events()
            self._listeners.publish(events)
            raise
        finally:
            with self._lock:
                if self._control is control:  # not the next flow's, begun meanwhile
                    self._control = None
        return effect.result

    def _perform(self, effect: Effect, control: _FlowControl) -> Answer | None:
        """Do the effect's I/O; ``None`` means the flow was cancelled meanwhile."""
        if isinstance(effect, BackOff):
            wake = control.fresh_wake()
            if control.cancelled or wake.wait(effect.delay):
                return None
            return ELAPSED
        assert not isinstance(effect, Finish)
        outcome = self._call(effect, control)
        if outcome is None:
            return None
        if isinstance(effect, FetchToken):
            return token_answer(outcome, self._core)
        return activation_answer(outcome, self._core)

    def _call(self, effect: FetchToken | CallActivator, control: _FlowControl) -> Outcome | None:
        args: tuple[Any, ...]
        if isinstance(effect, FetchToken):
            fn, is_async, args = self._provider, self._provider_is_async, ()
        else:
            fn, is_async, args = self._activate, self._activator_is_async, (effect.option,)
        if effect.timeout is None:
            return call_blocking(fn, is_async, args)
        wake = control.fresh_wake()
        if control.cancelled:
            return None
        return call_pooled(fn, is_async, args, effect.timeout, self._workers, wake)
