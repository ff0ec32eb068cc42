"""Builds the ``transitions`` machine from the table, once per profile.

A ``Machine`` per session costs hundreds of microseconds and tens of
kilobytes, and ``add_model`` slows down as models pile up. So no model is ever
added: each session's core is handed to ``Event.trigger`` directly, and the
machine only holds the (immutable after build) states, events and callbacks.
With no queue, ``Event.trigger`` keeps nothing between calls, so one machine
serves any number of sessions on any number of threads.
"""

from __future__ import annotations

from functools import cache

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
