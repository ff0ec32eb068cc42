"""Builds the ``transitions`` machine from the table, once per profile, and compiles it.

A ``Machine`` per session costs hundreds of microseconds and tens of
kilobytes, and ``add_model`` slows down as models pile up. So no model is ever
added: each session's core is handed to ``Event.trigger`` directly, and the
machine only holds the (immutable after build) states, events and callbacks.
With no queue, ``Event.trigger`` keeps nothing between calls, so one machine
serves any number of sessions on any number of threads.

``compiled_for`` then reads the built machine back into a dispatch table
(trigger -> source -> edges, each a destination, guards and actions), and
``dispatch_for`` binds it to the model's methods: a ``Dispatch`` the core
executes directly. ``Event.trigger`` spends most of a step on
bookkeeping our table never asks for (an ``EventData`` per call, debug
logging, callback resolution by name): executing the machine's own
transitions ourselves makes a visitor's flow several times cheaper, while
``transitions`` still builds and validates the machine, and draws nothing
that the core does not execute. Any feature of ``transitions`` the table
might start using and the executor does not run (``unless``, ``after``,
``prepare``, machine-level callbacks) is refused here, loudly.

This is also the one module that trades readability for speed on the hot
path, so the core reads like the table: states live on the model as their
plain string names (``MODEL_ATTRIBUTE``, as ``transitions`` keeps them), and
the lookups keyed by those names (``STATE_OF``, ``refusal``, ``work_on_entering``
and the name sets below) are built here once. An Enum member's ``.value`` and
``__hash__`` are Python-level calls; a str's are not.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final, NamedTuple

from transitions import Machine

from statemachine.protocol.errors import TransitionNotAllowed
from statemachine.protocol.policy import ActivationPolicy, Fallback, Profile
from statemachine.protocol.reasons import FailureReason
from statemachine.protocol.states import FLOW_STARTS, IN_FLIGHT, State, Trigger
from statemachine.protocol.table import ON_ENTER, REJECTIONS, Work, allowed_triggers, rows_for

MODEL_ATTRIBUTE = "_fsm_state"

# -- lookups by state name (the model keeps its state as a plain string) --------------
STATE_OF: Final = {s.value: s for s in State}
"""``State(value)`` goes through ``Enum.__call__``; a dict lookup is several times faster."""
TRIGGER_OF: Final = {t.value: t for t in Trigger}
UNAUTHENTICATED: Final = State.UNAUTHENTICATED.value
AUTHENTICATED: Final = State.AUTHENTICATED.value
IN_FLIGHT_NAMES: Final = frozenset(s.value for s in IN_FLIGHT)
NO_REASON_NAMES: Final = frozenset(
    {State.FETCHING_TOKEN.value, State.ACTIVATING.value, State.AUTHENTICATED.value}
)
"""Entering these says nothing about a failure, so history shows no reason there."""
_REFUSALS: Final = {(s.value, t.value): reason for (s, t), reason in REJECTIONS.items()}
_FLOW_START_NAMES: Final = frozenset(t.value for t in FLOW_STARTS)
_WORK: Final = {s.value: work for s, work in ON_ENTER.items()}


def starts_flow(trigger: Trigger) -> bool:
    return trigger._value_ in _FLOW_START_NAMES


def refusal(state: str, trigger: Trigger) -> FailureReason | None:
    """The tag's refusal of ``trigger`` in the state named ``state``, if the table has one."""
    return _REFUSALS.get((state, trigger._value_))


def work_on_entering(state: str) -> Work:
    """What the table's ``ON_ENTER`` asks a driver to do in the state named ``state``."""
    return _WORK[state]


@cache
def machine_for(profile: Profile) -> Machine:
    profile = Profile(Fallback(profile[0]), Fallback(profile[1]))
    machine = Machine(
        model=None,
        states=[s.value for s in State],
        initial=State.UNAUTHENTICATED.value,
        send_event=True,
        auto_transitions=False,
        ignore_invalid_triggers=False,
        model_attribute=MODEL_ATTRIBUTE,
        name=f"activation[{profile.on_token_failure.value}/{profile.on_activation_failure.value}]",
    )
    for row in rows_for(profile):
        machine.add_transition(
            trigger=row.trigger.value,
            source=row.source.value,
            dest=row.dest.value,
            conditions=[row.guard.value] if row.guard is not None else None,
            before=[a.value for a in row.actions] or None,
        )
    return machine


class Edge(NamedTuple):
    """One transition as the core executes it: guards and actions are the model's method names."""

    dest: str
    guards: tuple[str, ...]
    actions: tuple[str, ...]


Compiled = dict[str, dict[str, tuple[Edge, ...]]]


def compiled_for(profile: Profile) -> Compiled:
    machine = machine_for(profile)
    if machine.prepare_event or machine.before_state_change or machine.after_state_change:
        raise RuntimeError("the core does not run machine-level callbacks")
    table: Compiled = {}
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            edges = []
            for transition in transitions:
                if transition.after or transition.prepare:
                    raise RuntimeError(f"{trigger}: the core runs only conditions and 'before'")
                if any(condition.target is not True for condition in transition.conditions):
                    raise RuntimeError(f"{trigger}: the core does not run 'unless' conditions")
                if transition.dest is None:
                    raise RuntimeError(f"{trigger}: the core does not run internal transitions")
                edges.append(
                    Edge(
                        transition.dest,
                        tuple(_name(c.func) for c in transition.conditions),
                        tuple(_name(a) for a in transition.before),
                    )
                )
            table.setdefault(trigger, {})[source] = tuple(edges)
    return table


def _name(callback: str | Callable[..., Any]) -> str:
    if not isinstance(callback, str):
        raise RuntimeError("the table names its guards and actions; callables are not compiled")
    return callback


class EventArgs(NamedTuple):
    """What guards and actions read: the event's payload (``transitions``' EventData has it too)."""

    kwargs: dict[str, Any]


_Bound = tuple[str, tuple[Callable[..., Any], ...], tuple[Callable[..., Any], ...]]
_NO_EDGES: Final[dict[str, tuple[_Bound, ...]]] = {}


class Dispatch:
    """One profile's compiled machine, bound to a model class: what ``fire`` executes."""

    __slots__ = ("_edges", "profile")

    def __init__(self, profile: Profile, model_class: type) -> None:
        self.profile = profile
        self._edges = {
            trigger: {
                source: tuple(
                    (
                        edge.dest,
                        tuple(getattr(model_class, name) for name in edge.guards),
                        tuple(getattr(model_class, name) for name in edge.actions),
                    )
                    for edge in edges
                )
                for source, edges in sources.items()
            }
            for trigger, sources in compiled_for(profile).items()
        }

    def move(
        self,
        model: Any,
        trigger: Trigger,
        option: object = None,
        reason: FailureReason | None = None,
    ) -> tuple[str, str]:
        """Take the table's edge for ``trigger`` from ``model``'s state: (source, dest) names.

        The first edge whose guards all pass runs its actions, then the model
        moves. Raises ``TransitionNotAllowed`` (and changes nothing) when the
        table has no row for ``trigger`` in that state.
        """
        source: str = model._fsm_state  # MODEL_ATTRIBUTE, read directly: this runs every step
        edges = self._edges.get(trigger._value_, _NO_EDGES).get(source)
        if edges is None:
            state = STATE_OF[source]
            raise TransitionNotAllowed(
                state, trigger, allowed_triggers(state, rows_for(self.profile))
            )
        event = EventArgs({"option": option, "reason": reason})
        for dest, guards, actions in edges:
            if guards and not all(guard(model, event) for guard in guards):
                continue
            for action in actions:
                action(model, event)
            model._fsm_state = dest
            return source, dest
        raise RuntimeError(
            f"no row of the table matched {trigger.value} in {source}"
        )  # pragma: no cover


_DISPATCH: dict[tuple[object, object, type], Dispatch] = {}


def dispatch_for(policy: ActivationPolicy, model_class: type) -> Dispatch:
    """The compiled machine for ``policy``'s shape, bound to ``model_class``: built once.

    Looked up by the policy's two raw decisions (``Fallback`` is a ``StrEnum``,
    so ``"block"`` and ``Fallback.BLOCK`` share a key): at most four exist.
    """
    key = (policy.on_token_failure, policy.on_activation_failure, model_class)
    dispatch = _DISPATCH.get(key)
    if dispatch is None:
        dispatch = _DISPATCH[key] = Dispatch(Profile.of(policy), model_class)
    return dispatch
