"""Refuse to run beside python-statemachine, whose top-level package is also ``statemachine``.

Both distributions install a ``statemachine`` package into the same
``site-packages``: their files overwrite or mix with ours, and ``pip check``
sees nothing. Failing at import with the name of the clash beats failing
somewhere deep with a missing attribute.
"""

from __future__ import annotations

import os
import sys

CLASHING_DISTRIBUTION = "python-statemachine"


def clash_message(version: str | None = None) -> str:
    found = f"{CLASHING_DISTRIBUTION} {version}" if version else CLASHING_DISTRIBUTION
    return (
        f"secured-activation cannot run beside {found}: both install a top-level package "
        "named 'statemachine' into the same environment, where they overwrite each other. "
        "Use a virtual environment of its own for secured-activation "
        f"(or pip uninstall {CLASHING_DISTRIBUTION})."
    )


_PREFIXES = ("python_statemachine-", "python-statemachine-")


def installed_version() -> str | None:
    """The clashing distribution's version if its metadata is on ``sys.path``.

    A directory listing per path entry, as ``importlib.metadata`` would do,
    without importing it (tens of milliseconds on every start-up).
    """
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.lower().startswith(_PREFIXES) and name.endswith((".dist-info", ".egg-info")):
                stem = name.removesuffix(".dist-info").removesuffix(".egg-info")
                return stem.split("-")[1] if "-" in stem else "?"
    return None


def check_no_clash() -> None:
    version = installed_version()
    if version is not None:
        raise ImportError(clash_message(version))
