"""The reference host that ``secured-activation serve`` runs, offline, on the embedded default.

A demo sign-in (an HMAC-signed cookie), the activation routes and snippet, a
stand-in tag with the tag's API and retries, a local platform endpoint that
runs ``LocalActivator``, the inspector and ``/metrics``. Throwaway keys and the
cookie secret are made once by ``serve`` and handed to every worker through
the environment, so that any worker can mint, verify and read any cookie.

``serve`` runs it with ``statemachine.web.serving.run_workers``, which binds the
socket itself, as TCP (``TCP_NODELAY``), for any number of workers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from policies import AnonymousFallbackPolicy, DefensivePolicy, load_policy
from statemachine.activator import LocalActivator
from statemachine.metrics import ActivationMetrics
from statemachine.policy import ActivationPolicy
from statemachine.stores.memory import MemoryStore
from statemachine.tokens import TokenIssuer, TokenVerifier
from statemachine.tokens.keys import generate_rsa, private_pem, public_pem
from statemachine.trackers import AsyncActivationTracker
from statemachine.web.inspector import inspector_routes
from statemachine.web.routes import BadRequest, activation_routes, error, json_body
from statemachine.web.serving import run_workers
from statemachine.web.testing import standin_routes

ENV_KEYS: Final = "SECURED_ACTIVATION_KEYS"
ENV_POLICY: Final = "SECURED_ACTIVATION_POLICY"
ENV_REDIS: Final = "SECURED_ACTIVATION_REDIS"
ENV_SECRET: Final = "SECURED_ACTIVATION_SECRET"
ISSUER: Final = "https://brand.example"
VISITOR_COOKIE: Final = "sa_visitor"
USER_COOKIE: Final = "sa_user"
_VISITOR: Final = re.compile(r"[0-9a-f]{32}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
KEY_FILES: Final = ("brand", "platform", "wrong")


def policy_from(text: str) -> ActivationPolicy:
    if text == "defensive":
        return DefensivePolicy()
    if text == "anonymous":
        return AnonymousFallbackPolicy()
    return load_policy(text)


def write_keys(directory: Path) -> None:
    """Throwaway pairs: brand, platform, and a 'wrong' brand key for the demo's bad tokens."""
    for name in KEY_FILES:
        key = generate_rsa()
        private = directory / f"{name}_private.pem"
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem(key))
        (directory / f"{name}_public.pem").write_bytes(public_pem(key))


class Cookies:
    """The demo sign-in: the user id in a cookie, signed with the secret all workers share."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def _mac(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()

    def sign(self, user_id: str, wrong_key: bool) -> str:
        payload = base64.urlsafe_b64encode(
            json.dumps({"u": user_id, "w": wrong_key}).encode()
        ).decode()
        return f"{payload}.{self._mac(payload)}"

    def read(self, value: str | None) -> tuple[str, bool] | None:
        if not value or value.count(".") != 1 or len(value) > 2048:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload))
            return str(data["u"]), bool(data["w"])
        except (ValueError, KeyError, TypeError):
            return None


def create_app() -> Starlette:
    """The ASGI app of one worker, configured from the environment ``serve`` prepared."""
    keys = Path(os.environ[ENV_KEYS])
    policy = policy_from(os.environ.get(ENV_POLICY, "defensive"))
    redis_url = os.environ.get(ENV_REDIS)
    if redis_url:
        from statemachine.stores.redis import RedisStore

        store: Any = RedisStore.from_url(redis_url)
    else:
        store = MemoryStore()
    tracker = AsyncActivationTracker(policy, store)
    metrics = ActivationMetrics()
    tracker.add_listener(metrics)
    issuers = {
        False: TokenIssuer(keys / "brand_private.pem", keys / "platform_public.pem", ISSUER),
        True: TokenIssuer(keys / "wrong_private.pem", keys / "platform_public.pem", ISSUER),
    }
    activator = LocalActivator(
        TokenVerifier(keys / "platform_private.pem", keys / "brand_public.pem", issuer=ISSUER)
    )
    cookies = Cookies(bytes.fromhex(os.environ[ENV_SECRET]))
    static = resources.files("statemachine.web").joinpath("static")
    page = static.joinpath("page.html").read_text("utf-8")

    def visitor_id(request: Request) -> str | None:
        value = request.cookies.get(VISITOR_COOKIE)
        return value if value and _VISITOR.fullmatch(value) else None

    def token_provider(request: Request) -> Any:
        signed = cookies.read(request.cookies.get(USER_COOKIE))
        if signed is None:
            return None  # nobody signed in: the backend cannot mint, the policy answers
        user_id, wrong = signed

        async def mint() -> str:  # CPU-bound and short: no thread hand-off needed
            return issuers[wrong].issue(user_id)

        return mint

    def with_visitor(response: Response, request: Request) -> Response:
        if visitor_id(request) is None:
            response.set_cookie(
                VISITOR_COOKIE, secrets.token_hex(16), httponly=True, samesite="lax"
            )
        return response

    async def index(request: Request) -> Response:
        html = page.replace("__POLICY__", str(policy.name))
        return with_visitor(HTMLResponse(html, headers={"Cache-Control": "no-store"}), request)

    async def login(request: Request) -> Response:
        try:
            body = await json_body(request)
        except BadRequest as refused:
            return error(refused.status, refused.message)
        user_id, wrong = body.get("user_id"), body.get("wrong_key", False)
        if not isinstance(user_id, str) or not 0 < len(user_id) <= 255 or _CONTROL.search(user_id):
            return error(400, "user_id must be 1 to 255 printable characters")
        if not isinstance(wrong, bool):
            return error(400, "wrong_key must be true or false")
        response = Response(status_code=204)
        response.set_cookie(
            USER_COOKIE, cookies.sign(user_id, wrong), httponly=True, samesite="lax"
        )
        return with_visitor(response, request)

    async def signout(_request: Request) -> Response:
        response = Response(status_code=204)
        response.delete_cookie(USER_COOKIE)
        return response

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        *standin_routes(activator),  # the stand-in tag and platform: this host is offline
        *activation_routes(tracker, visitor_id=visitor_id, token_provider=token_provider),
        *inspector_routes(tracker, metrics=metrics),
    ]
    return Starlette(routes=routes)


def serve(*, policy: str, redis: str | None, workers: int, host: str, port: int) -> int:
    """Run the reference host until interrupted; keys and secret live only for this run."""
    policy_from(policy)  # a bad policy fails here, once, with a PolicyError
    if redis:
        from statemachine.stores.redis import RedisStore

        RedisStore.from_url(redis)  # checks the URL's form; connecting happens per request
    directory = Path(tempfile.mkdtemp(prefix="secured-activation-keys-"))
    try:
        write_keys(directory)
        os.environ.update(
            {
                ENV_KEYS: str(directory),
                ENV_POLICY: policy,
                ENV_SECRET: secrets.token_hex(32),
                **({ENV_REDIS: redis} if redis else {}),
            }
        )
        where = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        store = "Redis" if redis else "in-memory store"
        print(
            f"secured-activation serve: {where} (policy {policy}, {store}, "
            f"{workers} worker{'s' if workers > 1 else ''}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        run_workers("statemachine.web.reference:create_app", host=host, port=port, workers=workers)
        return 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
