"""The reference host that ``secured-activation serve`` runs, offline, on the embedded default.

A demo sign-in (an HMAC-signed cookie), the activation routes and snippet, a
stand-in tag with the tag's API and retries, a local platform endpoint that
runs ``LocalActivator``, the inspector and ``/metrics``. Throwaway keys and the
cookie secret are made once by ``serve`` and handed to every worker through
the environment, so that any worker can mint, verify and read any cookie.

``serve`` runs it with ``statemachine.web.serving.run_workers``, which binds the
socket itself, as TCP (``TCP_NODELAY``), for any number of workers. The stand-in
tag and platform are the testing kit's (``statemachine.web.testing``).
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
from collections import OrderedDict
from collections.abc import Mapping
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request

from policies import AnonymousFallbackPolicy, DefensivePolicy, load_policy
from statemachine.hostcalls.activator import LocalActivator
from statemachine.protocol.policy import ActivationPolicy
from statemachine.signals.metrics import ActivationMetrics
from statemachine.stores.memory import MemoryStore
from statemachine.tokens import TokenIssuer, TokenVerifier
from statemachine.tokens.claims import user_id_problem
from statemachine.tokens.keys import generate_rsa, private_pem, public_pem
from statemachine.tracking._faces import AsyncActivationTracker
from statemachine.web.http import (
    NO_STORE,
    HttpRequest,
    HttpResponse,
    Refused,
    Route,
    check_state_change,
    cookie_header,
    error_response,
    is_https,
    json_object,
    last_resort,
    refuse_unrouted,
)
from statemachine.web.routes import activation_routes, adapt, inspector_routes
from statemachine.web.serving import run_workers
from statemachine.web.testing import standin_routes

ENV_KEYS: Final = "SECURED_ACTIVATION_KEYS"
ENV_POLICY: Final = "SECURED_ACTIVATION_POLICY"
ENV_REDIS: Final = "SECURED_ACTIVATION_REDIS"
ENV_REDIS_TIMEOUT: Final = "SECURED_ACTIVATION_REDIS_TIMEOUT"
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
        # UTF-8, not \u escapes: 255 characters of any script stay within what ``read`` takes.
        payload = base64.urlsafe_b64encode(
            json.dumps({"u": user_id, "w": wrong_key}, ensure_ascii=False).encode()
        ).decode()
        return f"{payload}.{self._mac(payload)}"

    def read(self, value: str | None) -> tuple[str, bool] | None:
        """The signed-in user, or None for anything that is not a cookie this host signed."""
        if not value or len(value) > 2048 or not value.isascii() or value.count(".") != 1:
            return None  # compare_digest refuses non-ASCII text: checked before it
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload))
            return str(data["u"]), bool(data["w"])
        except (ValueError, KeyError, TypeError):
            return None


class SignIns:
    """Who signed in on which visitor, for the inspector's lookup box (user id -> visitor).

    The demo keeps the most recent sign-ins of this worker, bounded; a brand's own
    ``lookup`` would ask its session store instead.
    """

    LIMIT: Final = 10_000

    def __init__(self) -> None:
        self._visitors: OrderedDict[str, str] = OrderedDict()

    def remember(self, user_id: str, visitor_id: str) -> None:
        self._visitors[user_id] = visitor_id
        self._visitors.move_to_end(user_id)
        while len(self._visitors) > self.LIMIT:
            self._visitors.popitem(last=False)

    def lookup(self, user_id: str) -> str | None:
        return self._visitors.get(user_id)


class ReferencePages:
    """The reference host's own routes, on the HTTP core's rules: the page and the demo
    sign-in (same-origin JSON only, like every state change)."""

    routes: Final = (
        Route("/", ("GET", "HEAD")),
        Route("/login", ("POST",)),
        Route("/signout", ("POST",)),
    )

    def __init__(self, policy: ActivationPolicy, cookies: Cookies, activator: LocalActivator):
        static = resources.files("statemachine.web").joinpath("static")
        page = static.joinpath("page.html").read_text("utf-8")
        self.page = page.replace("__POLICY__", str(policy.name))
        self.cookies = cookies
        self.activator = activator
        self.signed_in = SignIns()
        self._methods = {route.path: route.methods for route in self.routes}

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            refuse_unrouted(self._methods, request)
            if request.path == "/":
                html = (("Content-Type", "text/html; charset=utf-8"), *NO_STORE)
                signed = self.cookies.read(cookie_jar(request).get(USER_COOKIE))
                user = escape(signed[0], quote=True) if signed else ""
                page = self.page.replace("__USER__", user).encode("utf-8")
                return HttpResponse(200, html + self._visitor_cookie(request), page)
            if request.path == "/login":
                return self.login(request)
            check_state_change(request)  # /signout
            json_object(request, empty_ok=True)
            gone = cookie_header(USER_COOKIE, "", secure=is_https(request), max_age=0)
            return HttpResponse(204, (*NO_STORE, gone), b"")
        except Refused as refused:
            return error_response(refused.status, refused.message, refused.headers)
        except Exception as error:  # noqa: BLE001 - never a 500
            return last_resort(error, request.path)

    def _visitor_cookie(
        self, request: HttpRequest, user_id: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        visitor = visitor_of(cookie_jar(request))
        cookie: tuple[tuple[str, str], ...] = ()
        if visitor is None:
            visitor = secrets.token_hex(16)
            cookie = (cookie_header(VISITOR_COOKIE, visitor, secure=is_https(request)),)
        if user_id is not None:
            self.signed_in.remember(user_id, visitor)
        return cookie

    def login(self, request: HttpRequest) -> HttpResponse:
        check_state_change(request)
        body = json_object(request)
        user_id, wrong = body.get("user_id"), body.get("wrong_key", False)
        if (
            not isinstance(user_id, str)
            or not 0 < len(user_id) <= 255
            or _CONTROL.search(user_id)
            or not _encodable(user_id)
            or user_id_problem(user_id) is not None  # what no token could carry
        ):
            raise Refused(400, "user_id must be 1 to 255 printable characters")
        if not isinstance(wrong, bool):
            raise Refused(400, "wrong_key must be true or false")
        signed = cookie_header(
            USER_COOKIE, self.cookies.sign(user_id, wrong), secure=is_https(request)
        )
        return HttpResponse(204, (*NO_STORE, signed, *self._visitor_cookie(request, user_id)), b"")


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (JSON may carry lone surrogates, UTF-8 cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cookie_jar(request: HttpRequest) -> dict[str, str]:
    """The request's cookies (the first of a repeated name wins), from the native request."""
    native = request.native
    if isinstance(native, Request):
        return dict(native.cookies)
    from http.cookies import SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    for header in request.headers.get_all("cookie"):
        try:
            jar.load(header)
        except Exception:  # noqa: BLE001, S112 - a malformed cookie header is no cookie
            continue
    return {name: morsel.value for name, morsel in jar.items()}


def visitor_of(cookies: Mapping[str, str]) -> str | None:
    value = cookies.get(VISITOR_COOKIE)
    return value if value and _VISITOR.fullmatch(value) else None


def create_app() -> Starlette:
    """The ASGI app of one worker, configured from the environment ``serve`` prepared."""
    keys = Path(os.environ[ENV_KEYS])
    policy = policy_from(os.environ.get(ENV_POLICY, "defensive"))
    redis_url = os.environ.get(ENV_REDIS)
    if redis_url:
        from statemachine.stores.redis import RedisStore

        timeout = os.environ.get(ENV_REDIS_TIMEOUT)
        store: Any = (
            RedisStore.from_url(redis_url, timeout=float(timeout))
            if timeout
            else RedisStore.from_url(redis_url)
        )
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

    def visitor_id(request: Request) -> str | None:
        return visitor_of(request.cookies)

    def token_provider(request: Request) -> Any:
        signed = cookies.read(request.cookies.get(USER_COOKIE))
        if signed is None:
            return None  # nobody signed in: the backend cannot mint, the policy answers
        user_id, wrong = signed

        async def mint() -> str:  # CPU-bound and short: no thread hand-off needed
            return issuers[wrong].issue(user_id)

        return mint

    pages = ReferencePages(policy, cookies, activator)
    routes = [
        # First: Starlette tries the routes in order, and the token request is the hot path
        # (every page load of a signed-in visitor). No two routes share a path.
        *activation_routes(tracker, visitor_id=visitor_id, token_provider=token_provider),
        *adapt((route.path for route in pages.routes), pages.handle),
        *standin_routes(activator),  # the stand-in tag and platform: this host is offline
        *inspector_routes(
            tracker, metrics=metrics, secret=cookies.secret, lookup=pages.signed_in.lookup
        ),
    ]
    return Starlette(routes=routes)


def serve(
    *,
    policy: str,
    redis: str | None,
    workers: int,
    host: str,
    port: int,
    redis_timeout: float | None = None,
) -> int:
    """Run the reference host until interrupted; keys and secret live only for this run.

    ``redis_timeout`` is the store's per-call timeout (its default when ``None``): a host
    whose event loop is busy with CPU work (minting, verifying) needs more than a quiet one.
    """
    policy_from(policy)  # a bad policy fails here, once, with a PolicyError
    if redis:
        from statemachine.stores.redis import RedisStore

        # Checks the URL's form and the timeout; connecting happens per request.
        if redis_timeout is None:
            RedisStore.from_url(redis)
        else:
            RedisStore.from_url(redis, timeout=redis_timeout)
    directory = Path(tempfile.mkdtemp(prefix="secured-activation-keys-"))
    try:
        write_keys(directory)
        os.environ.update(
            {
                ENV_KEYS: str(directory),
                ENV_POLICY: policy,
                ENV_SECRET: secrets.token_hex(32),
                **({ENV_REDIS: redis} if redis else {}),
                **({ENV_REDIS_TIMEOUT: repr(redis_timeout)} if redis_timeout else {}),
            }
        )
        if not redis_timeout:
            os.environ.pop(ENV_REDIS_TIMEOUT, None)  # the store's default, not an earlier run's
        where = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        store = "Redis" if redis else "in-memory store"

        def announce() -> None:  # once the port is ours: a port in use fails without a banner
            print(
                f"secured-activation serve: {where} (policy {policy}, {store}, "
                f"{workers} worker{'s' if workers > 1 else ''}); Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )

        run_workers(
            "statemachine.web.reference:create_app",
            host=host,
            port=port,
            workers=workers,
            ready=announce,
        )
        return 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
