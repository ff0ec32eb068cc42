"""Reading a policy from TOML or a mapping, with errors that name the field."""

from __future__ import annotations

import stat
import tomllib
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Final

from policies.budget import read_budget
from policies.errors import PolicyError
from policies.fallback import AnonymousFallbackPolicy, DefensivePolicy
from policies.retry import RetryPolicy

_TOP_KEYS: Final = (
    "fallback",
    "on_activation_failure",
    "token_timeout",
    "activation_timeout",
    "session_lifetime",
    "mint_budget",
    "retry",
)
_RETRY_KEYS: Final = ("max_retries", "base_delay", "multiplier", "max_delay", "jitter", "retry_on")
_FALLBACKS: Final = ("defensive", "anonymous")

Policy = DefensivePolicy | AnonymousFallbackPolicy


def _check_keys(where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            field = f"{where}.{key}" if where else str(key)
            raise PolicyError(field, f"unknown key (expected one of: {', '.join(allowed)})")


MAX_POLICY_BYTES: Final = 64 * 1024
"""A policy is a dozen lines; a file past this is not one (and is never read whole)."""


def _read(source: str | PathLike[str]) -> dict[str, Any]:
    """The file's TOML, read only if it is a regular file of bounded size.

    A FIFO would wait for a writer for ever, ``/dev/zero`` never ends, and a
    giant file would be read whole before TOML said a word: as key files are.
    """
    path = Path(source)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise PolicyError("file", f"{path} is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise PolicyError("file", f"{path} is over {MAX_POLICY_BYTES} bytes, not a policy")
        return tomllib.loads(data.decode("utf-8"))
    except PolicyError:
        raise
    except FileNotFoundError:
        raise PolicyError("file", f"no policy file at {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError("file", f"cannot read {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise PolicyError("file", f"{path} is not valid TOML: {error}") from None
    except ValueError as error:  # e.g. an integer of thousands of digits
        raise PolicyError("file", f"{path} holds a value Python refuses: {error}") from None
    except RecursionError:
        raise PolicyError("file", f"{path} nests too deeply") from None


def load_policy(source: str | PathLike[str] | Mapping[str, Any]) -> Policy:
    """Build a policy from a TOML file's path or the same keys as a mapping.

    ``fallback`` defaults to ``"defensive"``, the platform's recommendation.
    """
    if isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, str | PathLike):
        data = _read(source)
    else:
        raise PolicyError(
            "source", f"must be a TOML file's path or a mapping, got {type(source).__name__}"
        )
    if not all(isinstance(key, str) for key in data):
        raise PolicyError("source", "keys must be strings")
    try:
        return _build(data)
    except PolicyError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError) as error:
        # A safety net: every specific case above names its field; this names the kind.
        raise PolicyError("source", f"unreadable policy ({type(error).__name__})") from None


def _build(data: dict[str, Any]) -> Policy:
    _check_keys("", data, _TOP_KEYS)
    fallback = data.pop("fallback", "defensive")
    if fallback not in _FALLBACKS:
        raise PolicyError("fallback", f'must be "defensive" or "anonymous", got {fallback!r}')

    retry_data = data.pop("retry", {})
    if not isinstance(retry_data, Mapping):
        raise PolicyError("retry", "must be a table of retry settings")
    _check_keys("retry", retry_data, _RETRY_KEYS)
    try:
        retry = RetryPolicy(**retry_data)
    except TypeError as error:  # pragma: no cover - keys are checked above
        raise PolicyError("retry", str(error)) from None

    if "mint_budget" in data:
        data["mint_budget"] = read_budget(data["mint_budget"])

    if fallback == "defensive":
        if "on_activation_failure" in data:
            raise PolicyError("on_activation_failure", 'only applies to fallback = "anonymous"')
        return DefensivePolicy(retry=retry, **data)
    return AnonymousFallbackPolicy(retry=retry, **data)
