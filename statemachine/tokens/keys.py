"""Loading and generating RSA keys, once, as jwcrypto ``JWK`` objects.

jwcrypto caches the ``cryptography`` key inside each ``JWK``, so a key loaded
once here costs nothing more per token.
"""

from __future__ import annotations

import os
import stat
from os import PathLike
from pathlib import Path
from typing import Any, Final

from jwcrypto import jwk

from statemachine.tokens.errors import KeyLoadError

MIN_RSA_BITS: Final = 2048

KeySource = str | bytes | PathLike[str] | Any  # Any: a jwcrypto JWK (untyped library)


MAX_KEY_BYTES: Final = 64 * 1024
"""A PEM RSA key of 16384 bits is under 13 KiB; anything larger is not a key."""


def _pem_bytes(source: str | bytes | PathLike[str], role: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and "-----BEGIN" in source:
        data = source.encode("ascii", "replace")
    else:
        data = _read_key_file(Path(source), role)
    if len(data) > MAX_KEY_BYTES:
        raise KeyLoadError(f"{role}: over {MAX_KEY_BYTES} bytes, not a key")
    return data


def _read_key_file(path: Path, role: str) -> bytes:
    """Read a regular file of bounded size: a FIFO would hang, /dev/zero never ends."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise KeyLoadError(f"{role}: {path} is not a regular file")
        with path.open("rb") as handle:
            return handle.read(MAX_KEY_BYTES + 1)
    except KeyLoadError:
        raise
    except FileNotFoundError:
        raise KeyLoadError(f"{role}: no key file at {path}") from None
    except OSError as error:
        raise KeyLoadError(f"{role}: cannot read {path}: {error.strerror}") from None
    except ValueError:  # a path with a NUL byte
        raise KeyLoadError(f"{role}: not a usable path") from None


def load_key(source: KeySource, *, role: str, private: bool, password: bytes | None = None) -> Any:
    """A checked RSA ``JWK`` for ``role``; a public role also takes a private key's public half."""
    if isinstance(source, jwk.JWK):
        key = source
    elif isinstance(source, str | bytes | PathLike):
        data = _pem_bytes(source, role)
        if b"-----BEGIN" not in data:
            raise KeyLoadError(f"{role}: not a PEM key (expected a '-----BEGIN ...' block)")
        if b"ENCRYPTED" in data and password is None:
            raise KeyLoadError(f"{role}: the PEM key is encrypted and no password was given")
        try:
            key = jwk.JWK.from_pem(data, password=password)
        except Exception as error:  # noqa: BLE001 - DSA, broken ASN.1...: all one answer
            raise KeyLoadError(f"{role}: unreadable PEM key ({type(error).__name__})") from None
    else:
        raise KeyLoadError(
            f"{role}: expected PEM text or bytes, a path or a jwcrypto JWK, "
            f"got {type(source).__name__}"
        )
    if key.get("kty") != "RSA":
        raise KeyLoadError(f"{role}: needs an RSA key, got {key.get('kty')!r}")
    if private and not key.has_private:
        raise KeyLoadError(f"{role}: needs a private key, but a public key was given")
    bits = rsa_bits(key)
    if bits < MIN_RSA_BITS:
        raise KeyLoadError(f"{role}: RSA key of {bits} bits is too small (need >= {MIN_RSA_BITS})")
    if not private and key.has_private:
        key = jwk.JWK(**key.export_public(as_dict=True))
    return key


def rsa_bits(key: Any) -> int:
    return int(key.get_op_key("verify" if not key.has_private else "sign").key_size)


def generate_rsa(bits: int = MIN_RSA_BITS) -> Any:
    if bits < MIN_RSA_BITS:
        raise KeyLoadError(f"RSA keys need at least {MIN_RSA_BITS} bits, not {bits}")
    return jwk.JWK.generate(kty="RSA", size=bits)


def private_pem(key: Any) -> bytes:
    return bytes(key.export_to_pem(private_key=True, password=None))


def public_pem(key: Any) -> bytes:
    return bytes(key.export_to_pem(private_key=False))


KEY_FILES: Final = {
    "brand": ("brand_private.pem", "brand_public.pem"),
    "platform": ("platform_private.pem", "platform_public.pem"),
}


def write_key_pairs(directory: str | PathLike[str], *, bits: int = MIN_RSA_BITS) -> list[Path]:
    """Write a brand pair and a local platform pair; private files are created mode 0600.

    Existing files are never overwritten: a key someone relies on is not
    silently replaced.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / name for pair in KEY_FILES.values() for name in pair]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise KeyLoadError(f"refusing to overwrite existing key files: {', '.join(existing)}")
    written: list[Path] = []
    for private_name, public_name in KEY_FILES.values():
        key = generate_rsa(bits)
        private_path = folder / private_name
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem(key))
        public_path = folder / public_name
        public_path.write_bytes(public_pem(key))
        written += [private_path, public_path]
    return written
