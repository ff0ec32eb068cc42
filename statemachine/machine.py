"""Builds the ``transitions`` machine from the table, once per profile, and compiles it.

A ``Machine`` per session costs hundreds of microseconds and tens of
kilobytes, and ``add_model`` slows down as models pile up. So no model is ever
added: each session's core is handed to ``Event.trigger`` directly, and the
machine only holds the (immutable after build) states, events and callbacks.
With no queue, ``Event.trigger`` keeps nothing between calls, so one machine
serves any number of sessions on any number of threads.

``compiled_for`` then reads the built machine back into a dispatch table
(trigger -> source -> edges, each a destination, guards and actions) that
the core executes directly. ``Event.trigger`` spends most of a step on
bookkeeping our table never asks for (an ``EventData`` per call, debug
logging, callback resolution by name): executing the machine's own
transitions ourselves makes a visitor's flow several times cheaper, while
``transitions`` still builds and validates the machine, and draws nothing
that the core does not execute. Any feature of ``transitions`` the table
might start using and the executor does not run (``unless``, ``after``,
``prepare``, machine-level callbacks) is refused here, loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

from transitions import Machine

from statemachine.policy import Fallback, Profile
from statemachine.states import State
from statemachine.table import rows_for

MODEL_ATTRIBUTE = "_fsm_state"


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


@cache
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
