"""iAdvize-compatible tokens: minting (brand backend) and offline verification (platform)."""

from statemachine.tokens.claims import MAX_USER_ID, USER_ID, VISITOR_DATA, Claims
from statemachine.tokens.errors import KeyLoadError, TokenError
from statemachine.tokens.issuer import TokenIssuer
from statemachine.tokens.keys import generate_rsa, load_key, write_key_pairs
from statemachine.tokens.verifier import CHECKS, MAX_TOKEN_CHARS, Diagnosis, TokenVerifier

__all__ = [
    "CHECKS",
    "MAX_TOKEN_CHARS",
    "MAX_USER_ID",
    "USER_ID",
    "VISITOR_DATA",
    "Claims",
    "Diagnosis",
    "KeyLoadError",
    "TokenError",
    "TokenIssuer",
    "TokenVerifier",
    "generate_rsa",
    "load_key",
    "write_key_pairs",
]
