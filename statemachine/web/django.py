"""The Django adapter of the HTTP core (extra ``[django]``): URL patterns a project includes.

A thin translation: each core route becomes a URL pattern, Django's request
becomes the core's facts (body read up to ``MAX_BODY + 1`` bytes), and the
core's answer becomes an ``HttpResponse``. Every rule — bodies, flow ids,
origins, the inspector's guard, store failures, never a 500 — is the core's
(``statemachine.web.http``), the same as on every other framework.

The views are exempt from Django's CSRF check: the core's same-origin rule
(``Origin`` / ``Sec-Fetch-Site``, and a JSON content type an HTML form cannot
send) already refuses every state change another site could cause, so the
snippet needs no CSRF token, and a default project (``CsrfViewMiddleware``
on) works unchanged.

::

    urlpatterns = [
        path("activation/", include(activation_urls(tracker, visitor_id=..., token_provider=...))),
        path("", include(inspector_urls(tracker, metrics=metrics, guard=...))),
    ]

Every keyword may instead come from one settings dict, read when the URL
patterns are made; a value may be the object or its dotted import path::

    SECURED_ACTIVATION = {
        "tracker": "myhost.activation.tracker",
        "visitor_id": "myhost.activation.visitor_id",
        "token_provider": "myhost.activation.token_provider",
        "allowed_origins": ["https://www.brand.example"],
        "metrics": "myhost.activation.metrics",
        "guard": "myhost.activation.staff_only",
        "secret": os.environ["INSPECTOR_SECRET"],  # the inspector's, the same on every worker
        "lookup": "myhost.activation.find_visitor",
    }
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from django.http import HttpRequest as DjangoRequest
from django.http import HttpResponse as DjangoResponse
from django.urls import path as url_path

from statemachine.signals.metrics import ActivationMetrics
from statemachine.tracking._faces import ActivationTracker
from statemachine.web.http import (
    MAX_BODY,
    ActivationHttp,
    GuardOf,
    Headers,
    HttpRequest,
    HttpResponse,
    InspectorHttp,
    ProviderOf,
    VisitorOf,
    last_resort,
    reads_body,
)
from statemachine.web.inspector import Lookup

__all__ = ["SETTING", "activation_urls", "adapt", "inspector_urls", "request_facts"]

SETTING: Final = "SECURED_ACTIVATION"
"""The settings dict the keywords may come from."""

_SEGMENT: Final = re.compile(r"\{(\w+)\}")
_UNSET: Final[Any] = object()
_PLAIN: Final = frozenset({"allowed_origins", "secret"})
"""Settings whose text is the value itself, not a dotted path to import."""


def request_facts(request: DjangoRequest, path: str) -> HttpRequest:
    """The core's facts of a Django request, answered as ``path`` (a core route)."""
    meta = request.META
    method = str(request.method or "GET").upper()
    reads = reads_body(method, meta.get("CONTENT_LENGTH"))
    body = request.read(MAX_BODY + 1) if reads else b""
    server = f"{meta.get('SERVER_NAME', '')}:{meta.get('SERVER_PORT', '')}"
    return HttpRequest(
        method=method,
        path=path,
        headers=Headers(request.headers.items()),
        body=body,
        client=meta.get("REMOTE_ADDR"),
        scheme=request.scheme or "http",
        host=meta.get("HTTP_HOST") or server,
        query=meta.get("QUERY_STRING", ""),
        native=request,
    )


def django_response(answer: HttpResponse) -> DjangoResponse:
    """The core's answer as a Django response (a Set-Cookie becomes one of its cookies)."""
    response = DjangoResponse(answer.body, status=answer.status)
    for name, value in answer.headers:
        if name.lower() == "set-cookie":
            response.cookies.load(value)
        else:
            response.headers[name] = value
    return response


def adapt(templates: Iterable[str], handle: Callable[[HttpRequest], HttpResponse]) -> list[Any]:
    """URL patterns for a core's ``templates`` (``{name}`` segments), answered by ``handle``."""
    patterns = []
    for template in templates:

        def view(request: DjangoRequest, _template: str = template, **params: str) -> Any:
            try:
                path = _template.format(**params) if params else _template
                answer = handle(request_facts(request, path))
            except Exception as error:  # noqa: BLE001 - a client that went away, say
                answer = last_resort(error, _template)
            return django_response(answer)

        # the core's same-origin rule guards every state change: no CSRF token needed
        view.csrf_exempt = True  # type: ignore[attr-defined]
        route = _SEGMENT.sub(r"<str:\1>", template).lstrip("/")
        patterns.append(url_path(route, view, name=_name(template)))
    return patterns


def _name(template: str) -> str:
    return "secured_activation_" + (re.sub(r"\W+", "_", template).strip("_") or "index")


def _setting(given: Any, key: str, default: Any = _UNSET) -> Any:
    """The keyword if given, else ``SECURED_ACTIVATION[key]`` (an object or a dotted path)."""
    if given is not _UNSET:
        return given
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.utils.module_loading import import_string

    configured = getattr(settings, SETTING, None) or {}
    if key not in configured:
        if default is not _UNSET:
            return default
        raise ImproperlyConfigured(f"{key} is neither passed nor set in settings.{SETTING}")
    value = configured[key]
    if isinstance(value, str) and key not in _PLAIN:
        return import_string(value)
    return value


def activation_urls(
    tracker: ActivationTracker = _UNSET,
    *,
    visitor_id: VisitorOf = _UNSET,
    token_provider: ProviderOf = _UNSET,
    allowed_origins: Iterable[str] = _UNSET,
) -> list[Any]:
    """``token``, ``report``, ``logout`` (POST), ``state``, ``snippet.js`` (GET), for
    ``path("activation/", include(activation_urls(...)))``.

    ``visitor_id(request)`` and ``token_provider(request)`` get Django's request
    (``request.session`` holds your sign-in). State changes are same-origin
    only; ``allowed_origins`` adds origins the app cannot see as its own.
    """
    core = ActivationHttp(
        _setting(tracker, "tracker"),
        visitor_id=_setting(visitor_id, "visitor_id"),
        token_provider=_setting(token_provider, "token_provider"),
        allowed_origins=_setting(allowed_origins, "allowed_origins", ()),
    )
    return adapt((route.path for route in core.routes), core.handle)


def inspector_urls(
    tracker: ActivationTracker = _UNSET,
    *,
    metrics: ActivationMetrics | None = _UNSET,
    guard: GuardOf | None = _UNSET,
    prefix: str = "/inspect",
    secret: bytes | str | None = _UNSET,
    lookup: Lookup | None = _UNSET,
) -> list[Any]:
    """``inspect`` (the page), ``inspect/visitors``, ``inspect/visitor/<ref>``,
    ``inspect/lookup`` (POST), and ``metrics`` beside them when ``metrics`` is given, for
    ``path("", include(inspector_urls(...)))``.

    Without ``guard`` only loopback clients that no proxy stands in front of get
    them (403 otherwise); ``guard(request) -> bool`` is the host's admin check,
    e.g. ``lambda request: request.user.is_staff``. ``secret`` keys the visitors'
    references and handles: the same on every worker, or a handle one worker listed
    does not open on another. ``lookup(query) -> visitor_id | None`` backs the search box.
    """
    core = InspectorHttp(
        _setting(tracker, "tracker"),
        metrics=_setting(metrics, "metrics", None),
        prefix=prefix,
        guard=_setting(guard, "guard", None),
        secret=_setting(secret, "secret", None),
        lookup=_setting(lookup, "lookup", None),
    )
    return adapt((route.path for route in core.routes), core.handle)
