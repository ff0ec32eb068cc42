"""1. Engine per visitor: the shared machine against a ``Machine`` per visitor, same table."""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

from transitions import Machine

from bench.common import per_call, us
from policies import DefensivePolicy
from statemachine import ActivationSession, AsyncActivationSession, AuthenticationOption, Trigger
from statemachine.engine._core import ActivationCore
from statemachine.engine._machine import MODEL_ATTRIBUTE, machine_for
from statemachine.protocol.policy import Profile
from statemachine.protocol.states import State
from statemachine.protocol.table import rows_for

POLICY = DefensivePolicy(token_timeout=None, activation_timeout=None)
OPTION = AuthenticationOption.secured("token")
STATES = [s.value for s in State]
TABLE = [
    {
        "trigger": r.trigger.value,
        "source": r.source.value,
        "dest": r.dest.value,
        "conditions": [r.guard.value] if r.guard else None,
        "before": [a.value for a in r.actions] or None,
    }
    for r in rows_for(Profile.of(POLICY))
]


class NaiveModel(ActivationCore):
    """The same model, but with a ``__dict__`` so ``transitions`` can bind triggers onto it."""


def naive_machine(model: NaiveModel | None) -> Machine:
    """What a naive host does: build the whole machine from the same table."""
    return Machine(
        model=model,
        states=STATES,
        transitions=TABLE,
        initial=State.UNAUTHENTICATED.value,
        send_event=True,
        auto_transitions=False,
        model_attribute=MODEL_ATTRIBUTE,
    )


def naive_visitor() -> None:
    model = NaiveModel(POLICY)
    naive_machine(model)
    model.activate()  # type: ignore[attr-defined]
    model.token_received(option=OPTION)  # type: ignore[attr-defined]
    model.activation_succeeded()  # type: ignore[attr-defined]


EVENTS = machine_for(Profile.of(POLICY)).events


def raw_triggers() -> None:
    """The floor: what ``transitions`` itself costs for the happy path, on a shared machine."""
    core = ActivationCore(POLICY)
    EVENTS["activate"].trigger(core)
    EVENTS["token_received"].trigger(core, option=OPTION, reason=None)
    EVENTS["activation_succeeded"].trigger(core, option=None, reason=None)


def shared_visitor() -> None:
    core = ActivationCore(POLICY)
    core.begin(Trigger.ACTIVATE)
    core.fire(Trigger.TOKEN_RECEIVED, option=OPTION)
    core.fire(Trigger.ACTIVATION_SUCCEEDED)


class Instant:
    def activate(self, _option: AuthenticationOption) -> None:
        return None


def provider() -> str:
    return "token"


ACTIVATOR = Instant()


def session_visitor() -> None:
    ActivationSession(provider, ACTIVATOR, POLICY).activate()


def naive_session_visitor() -> None:
    """The blocking session's own work, plus the per-visitor ``Machine`` the naive way builds."""
    session_visitor()
    naive_machine(NaiveModel(POLICY))


DEFAULTS = DefensivePolicy()  # the default timeouts: plain callables go through the worker pool


class AsyncInstant:
    async def activate(self, _option: AuthenticationOption) -> None:
        return None


async def async_provider() -> str:
    return "token"


def naive_build() -> None:
    naive_machine(NaiveModel(POLICY))


def blocking_default() -> None:
    ActivationSession(provider, ACTIVATOR, DEFAULTS).activate()


def handoff() -> None:
    """One round trip to a pooled worker and back: what a timed plain call costs us."""
    from statemachine.hostcalls._calls import call_blocking_timed

    call_blocking_timed(provider, False, (), 5.0)


def pingpong_floor(number: int, repeats: int) -> float:
    """The machine's floor for a hand-off: a bare lock passed to another thread and back."""
    import _thread
    import threading

    there, back = _thread.allocate_lock(), _thread.allocate_lock()
    there.acquire()
    back.acquire()
    stop = [False]

    def partner() -> None:
        while True:
            there.acquire()
            back.release()
            if stop[0]:
                return

    threading.Thread(target=partner, daemon=True).start()

    def one() -> None:
        there.release()
        back.acquire()

    try:
        return per_call(one, number, repeats)
    finally:
        stop[0] = True
        there.release()
        back.acquire()


def in_loop(factory: Any, number: int, repeats: int) -> float:
    """Median per visitor of sequential flows inside one running loop."""
    import asyncio
    import statistics

    async def run() -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(number):
                await factory().activate()
            samples.append((time.perf_counter() - started) / number)
        return statistics.median(samples)

    return asyncio.run(run())


def faces(number: int, repeats: int) -> dict[str, float]:
    """Each face end to end against the same face plus a ``Machine`` built per visitor."""
    build = per_call(naive_build, number, repeats)
    measured = {
        "blocking, plain callables, default timeouts": per_call(blocking_default, number, repeats),
        "async, async callables, default timeouts": in_loop(
            lambda: AsyncActivationSession(async_provider, AsyncInstant(), DEFAULTS),
            number,
            repeats,
        ),
        "async, plain callables, default timeouts": in_loop(
            lambda: AsyncActivationSession(provider, ACTIVATOR, DEFAULTS), number // 2, repeats
        ),
    }
    return {
        "build": build,
        "handoff": per_call(handoff, number, repeats),
        "pingpong": pingpong_floor(number, repeats),
        **measured,
    }


def idle_bytes(factory: Any, count: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [factory() for _ in range(count)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / count


def creation_curve(factory: Any, sizes: list[int]) -> list[tuple[int, float]]:
    points = []
    for size in sizes:
        gc.collect()
        started = time.perf_counter()
        keep = [factory() for _ in range(size)]
        points.append((size, (time.perf_counter() - started) / size))
        del keep
    return points


def add_model_curve(sizes: list[int]) -> list[tuple[int, float]]:
    """What the issue warns about: one machine, ``add_model`` per visitor."""
    points = []
    for size in sizes:
        machine = naive_machine(None)
        started = time.perf_counter()
        for _ in range(size):
            machine.add_model(NaiveModel(POLICY))
        points.append((size, (time.perf_counter() - started) / size))
    return points


def _short_path(line: str) -> str:
    """Profile lines name files relative to site-packages or the repository, not this disk."""
    import re

    return re.sub(r"\S*/(site-packages|lib/python3\.\d+|secured-activation|main)/", "", line)


def profile_share() -> tuple[float, list[str]]:
    """Share of the core path spent executing the machine's edges (``fire``), and top lines."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(3000):
        shared_visitor()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = inside = 0.0
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        if name == "shared_visitor":
            total = row[3]
        if filename.endswith("statemachine/engine/_core.py") and name == "fire":
            inside = row[3]
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(12)
    lines = [_short_path(ln) for ln in text.getvalue().splitlines() if "(" in ln][:14]
    return inside / total, lines


def run(quick: bool) -> dict[str, Any]:
    number, repeats = (200, 3) if quick else (3000, 7)
    naive = per_call(naive_visitor, number, repeats)
    raw = per_call(raw_triggers, number * 3, repeats)
    shared = per_call(shared_visitor, number * 3, repeats)
    session = per_call(session_visitor, number * 2, repeats)
    naive_session = per_call(naive_session_visitor, number, repeats)
    count = 2000 if quick else 20_000
    sizes = [1000, 10_000] if quick else [1000, 10_000, 100_000]
    return {
        "naive": naive,
        "raw": raw,
        "shared": shared,
        "core_ratio": naive / shared,
        "session": session,
        "naive_session": naive_session,
        "session_ratio": naive_session / session,
        "idle_blocking": idle_bytes(lambda: ActivationSession(provider, ACTIVATOR, POLICY), count),
        "idle_async": idle_bytes(
            lambda: AsyncActivationSession(provider, ACTIVATOR, POLICY), count
        ),
        "idle_count": count,
        "curve": creation_curve(lambda: ActivationSession(provider, ACTIVATOR, POLICY), sizes),
        "add_model_curve": add_model_curve([500, 2000] if quick else [1000, 4000, 16_000]),
        "profile": profile_share(),
        "faces": faces(number // 3, repeats),
    }


def report(r: dict[str, Any]) -> list[str]:
    curve = " · ".join(f"{n:,}: {us(t)}/session" for n, t in r["curve"])
    add_model = " · ".join(f"{n:,}: {us(t)}/model" for n, t in r["add_model_curve"])
    first, last = r["curve"][0][1], r["curve"][-1][1]
    return [
        "## 1. Engine per visitor",
        "",
        "Happy path (activate → token_received → activation_succeeded) with instant adapters.",
        "",
        "| what | median per visitor | ratio |",
        "|---|---|---|",
        f"| naive: a `Machine` per visitor + the same triggers | {us(r['naive'])} | 1.0x |",
        f"| the same 3 triggers through `transitions`' `Event.trigger` on one shared `Machine` "
        f"| {us(r['raw'])} | {r['naive'] / r['raw']:.1f}x (the most an engine calling "
        "`Event.trigger` could reach) |",
        f"| ours: shared machine, sans-IO core | {us(r['shared'])} | **{r['core_ratio']:.1f}x** |",
        f"| naive + blocking-session driver | {us(r['naive_session'])} | 1.0x |",
        f"| ours: `ActivationSession` end to end | {us(r['session'])} "
        f"| **{r['session_ratio']:.1f}x** |",
        "",
        f"Idle session memory (tracemalloc over {r['idle_count']:,}): blocking "
        f"**{r['idle_blocking']:,.0f} B**, async **{r['idle_async']:,.0f} B** (target ≤ 2,048 B).",
        "",
        f"Creation time per session as the count grows: {curve} "
        f"(last/first = {last / first:.2f}: linear).",
        f"For contrast, one machine with `add_model` per visitor: {add_model}.",
        "",
        "The sessions, end to end, against the same session plus a `Machine` built per "
        "visitor (targets: blocking ≥ 2.5x, async with async callables ≥ 5x):",
        "",
        "| face | median per visitor | with a `Machine` per visitor | ratio |",
        "|---|---|---|---|",
        *(
            f"| {name} | {us(t)} | {us(t + r['faces']['build'])} | "
            f"**{(t + r['faces']['build']) / t:.1f}x** |"
            for name, t in r["faces"].items()
            if name not in ("build", "handoff", "pingpong")
        ),
        "",
        f"A timed plain call is handed to a pooled worker and back: {us(r['faces']['handoff'])} "
        "per call on this machine (two per flow), measured in the same run; the machine's floor "
        "for it, a bare lock passed to another thread and back, "
        f"{us(r['faces'].get('pingpong', float('nan')))}. That hand-off, not the engine, is most "
        "of the plain-callable rows.",
        "",
        f"Profile of the core path: **{r['profile'][0]:.0%}** of it is spent executing the "
        "machine's compiled edges (`ActivationCore.fire`; cProfile, cumulative):",
        "",
        "```",
        *r["profile"][1],
        "```",
        "",
    ]
