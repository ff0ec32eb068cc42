"""The Flask adapter of the HTTP core (extra ``[flask]``): blueprints a Flask host registers.

A thin translation: each core route becomes a URL rule of a blueprint, the
Flask request becomes the core's facts (body read up to ``MAX_BODY + 1``
bytes), and the core's answer becomes a Flask response. Every rule — bodies,
flow ids, origins, the inspector's guard, store failures, never a 500 — is the
core's (``statemachine.web.http``), the same as on every other framework.

The host's callables (``visitor_id``, ``token_provider``, ``guard``) receive
Flask's request object; with Flask's signed session they usually read
``flask.session``. The tracker is the blocking ``ActivationTracker``: a WSGI
worker handles a request in one thread.

::

    app.register_blueprint(
        activation_blueprint(tracker, visitor_id=..., token_provider=...),
        url_prefix="/activation",
    )
    app.register_blueprint(inspector_blueprint(tracker, metrics=metrics, guard=...))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

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
    Refused,
    VisitorOf,
    error_response,
    last_resort,
    reads_body,
)
from statemachine.web.inspector import Lookup

__all__ = ["activation_blueprint", "adapt", "inspector_blueprint", "request_facts"]

ALL_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Every rule takes every method, so a wrong one gets the core's JSON 405 like any refusal."""

_SEGMENT: Final = re.compile(r"\{(\w+)\}")


def request_facts(path: str) -> HttpRequest:
    """The core's facts of Flask's current request, answered as ``path`` (a core route)."""
    native = request._get_current_object()  # type: ignore[attr-defined]
    environ = native.environ
    headers = Headers(native.headers.items())
    method = native.method
    body = b""
    if reads_body(method, native.headers.get("Content-Length")):
        try:
            body = _read(native.stream, MAX_BODY + 1)
        except RequestEntityTooLarge:  # the host's MAX_CONTENT_LENGTH, below our cap
            raise Refused(413, f"the body is over {native.max_content_length} bytes") from None
    server = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    return HttpRequest(
        method=method,
        path=path,
        headers=headers,
        body=body,
        client=environ.get("REMOTE_ADDR"),
        scheme=native.scheme,
        host=environ.get("HTTP_HOST") or server,
        query=environ.get("QUERY_STRING", ""),
        native=native,
    )


def _read(stream: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes, to the end of the body: one ``read`` may return fewer (a
    chunked body that Werkzeug cut at the host's ``MAX_CONTENT_LENGTH`` raises only on
    the read past it)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def flask_response(answer: HttpResponse) -> Response:
    """The core's answer as a Flask response (repeated headers such as Set-Cookie kept)."""
    response = Response(answer.body, status=answer.status)
    response.headers.clear()
    for name, value in answer.headers:
        response.headers.add(name, value)
    return response


def adapt(
    name: str, templates: Iterable[str], handle: Callable[[HttpRequest], HttpResponse]
) -> Blueprint:
    """A blueprint named ``name`` whose rules are a core's ``templates``, answered by ``handle``."""
    blueprint = Blueprint(name, __name__)
    for template in templates:
        rule = _SEGMENT.sub(r"<\1>", template)

        def view(_template: str = template, **params: str) -> Response:
            try:
                path = _template.format(**params) if params else _template
                answer = handle(request_facts(path))
            except Refused as refused:  # over the host's own body limit
                answer = error_response(refused.status, refused.message, refused.headers)
            except Exception as error:  # noqa: BLE001 - a client that went away, say
                answer = last_resort(error, _template)
            return flask_response(answer)

        blueprint.add_url_rule(
            rule,
            endpoint=re.sub(r"\W+", "_", template).strip("_") or "index",
            view_func=view,
            methods=list(ALL_METHODS),
            provide_automatic_options=False,
        )
    return blueprint


def activation_blueprint(
    tracker: ActivationTracker,
    *,
    visitor_id: VisitorOf,
    token_provider: ProviderOf,
    allowed_origins: Iterable[str] = (),
    name: str = "secured_activation",
) -> Blueprint:
    """``POST /token``, ``/report``, ``/logout``; ``GET /state``, ``/snippet.js``, under the
    blueprint's ``url_prefix`` (``/activation`` in the README).

    ``visitor_id(request)`` and ``token_provider(request)`` get Flask's request.
    State changes are same-origin only; ``allowed_origins`` adds origins the app
    cannot see as its own (behind a proxy that changes scheme or host).
    """
    core = ActivationHttp(
        tracker,
        visitor_id=visitor_id,
        token_provider=token_provider,
        allowed_origins=allowed_origins,
    )
    return adapt(name, (route.path for route in core.routes), core.handle)


def inspector_blueprint(
    tracker: ActivationTracker,
    *,
    metrics: ActivationMetrics | None = None,
    guard: GuardOf | None = None,
    prefix: str = "/inspect",
    name: str = "secured_activation_inspector",
    secret: bytes | str | None = None,
    lookup: Lookup | None = None,
) -> Blueprint:
    """``GET {prefix}`` (the page), ``{prefix}/visitors``, ``{prefix}/visitor/<ref>``,
    ``POST {prefix}/lookup``, and ``/metrics`` beside them when ``metrics`` is given;
    register without a ``url_prefix``.

    Without ``guard`` only loopback clients that no proxy stands in front of get
    them (403 otherwise); ``guard(request) -> bool`` is the host's admin check.
    ``secret`` keys the visitors' references and handles: pass the same one to every
    worker, or a handle one worker listed does not open on another (the page's next
    request may reach either). ``lookup(query) -> visitor_id | None`` backs the page's
    search box.
    """
    core = InspectorHttp(
        tracker, metrics=metrics, prefix=prefix, guard=guard, secret=secret, lookup=lookup
    )
    return adapt(name, (route.path for route in core.routes), core.handle)
