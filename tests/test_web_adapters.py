"""The Flask and Django adapters in-process (Flask's test client; Django's, with CSRF checks
enforced): the same answers as the core's, the inspector's guard, the settings dict, the
testing kit's stand-ins, and a fuzz of headers and bodies that never gets a 500."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import DefensivePolicy
from statemachine import ActivationTracker
from statemachine.hostcalls.activator import LocalActivator
from statemachine.signals.metrics import ActivationMetrics
from statemachine.stores import MemoryStore
from statemachine.tokens import TokenIssuer, TokenVerifier

SUCCESS = {
    "authentication": {
        "option": {"type": "SECURED_AUTHENTICATION"},
        "status": "authentication-success",
    }
}


def visitor_of(request: Any) -> str | None:
    return request.headers.get("x-visitor")


def provider_of(issuer: TokenIssuer) -> Any:
    def token_provider(request: Any) -> Any:
        user = request.headers.get("x-user")
        return None if user is None else partial(issuer.issue, user)

    return token_provider


# -- Flask ------------------------------------------------------------------------------------


@pytest.fixture
def flask_client(issuer: TokenIssuer, verifier: TokenVerifier) -> Any:
    from flask import Flask

    from statemachine.web.flask import activation_blueprint, inspector_blueprint
    from statemachine.web.testing import standin_blueprint

    tracker = ActivationTracker(DefensivePolicy(), MemoryStore())
    metrics = ActivationMetrics()
    tracker.add_listener(metrics)
    app = Flask(__name__)
    blueprint = activation_blueprint(
        tracker, visitor_id=visitor_of, token_provider=provider_of(issuer)
    )
    app.register_blueprint(blueprint, url_prefix="/activation")
    app.register_blueprint(inspector_blueprint(tracker, metrics=metrics))
    app.register_blueprint(
        inspector_blueprint(
            tracker,
            metrics=None,
            prefix="/guarded",
            guard=lambda request: request.headers.get("x-admin") == "yes",
            name="guarded",
        )
    )
    app.register_blueprint(standin_blueprint(LocalActivator(verifier), prefix="/dev"))
    client = app.test_client()
    client.tracker = tracker  # type: ignore[attr-defined]
    return client


def test_flask_serves_the_flow(flask_client: Any) -> None:
    who = {"X-Visitor": "v-1", "X-User": "u-1"}
    answer = flask_client.post("/activation/token", json={"flow": "f"}, headers=who)
    assert answer.status_code == 200
    option = answer.get_json()["authenticationOption"]
    platform = flask_client.post("/dev/platform/activate", json={"authenticationOption": option})
    assert platform.get_json()["authentication"]["status"] == "authentication-success"
    report = flask_client.post(
        "/activation/report", json={"flow": "f", "activation": SUCCESS}, headers=who
    )
    assert report.get_json()["state"] == "authenticated"
    assert flask_client.get("/activation/state", headers=who).get_json()["state"] == (
        "authenticated"
    )
    other_tab = flask_client.post("/activation/token", json={"flow": "g"}, headers=who)
    assert other_tab.status_code == 200  # authenticated: a refresh
    snippet = flask_client.get("/activation/snippet.js")
    assert snippet.status_code == 200
    assert snippet.headers["Content-Type"].startswith("text/javascript")
    tag = flask_client.get("/dev/tag.js").get_data(as_text=True)
    assert tag.startswith("/* STAND-IN")
    assert '"/dev/platform/activate"' in tag
    scrape = flask_client.get("/metrics").get_data(as_text=True)
    assert 'secured_activation_outcomes_total{policy="defensive",reason="none"' in scrape
    logout = flask_client.post("/activation/logout", json={}, headers=who)
    assert logout.get_json() == {"state": "unauthenticated"}


def test_flask_refusals_are_the_cores(flask_client: Any) -> None:
    who = {"X-Visitor": "v-2", "X-User": "u-2"}
    wrong_method = flask_client.get("/activation/token", headers=who)
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.get_json()
    options = flask_client.options("/activation/token", headers=who)
    assert options.status_code == 405
    form = flask_client.post("/activation/logout", data={"a": "b"}, headers=who)
    assert form.status_code == 415
    cross = flask_client.post(
        "/activation/logout", json={}, headers={**who, "Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    assert flask_client.post("/activation/token", json={"flow": "f"}).status_code == 401
    huge = flask_client.post("/activation/token", data=b"x" * 70_000, headers=who)
    assert huge.status_code in (413, 415)
    assert flask_client.get("/inspect/visitors").status_code == 200  # the test client: loopback
    proxied = flask_client.get("/inspect/visitors", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403
    assert flask_client.get("/guarded/visitors").status_code == 403
    assert flask_client.get("/guarded/visitors", headers={"X-Admin": "yes"}).status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_flask_a_body_over_the_hosts_own_limit_is_413(
    flask_client: Any, logs: list[dict[str, Any]], chunked: bool
) -> None:
    """A Flask host that sets ``MAX_CONTENT_LENGTH`` (a common setting) below our cap:
    Werkzeug raises ``RequestEntityTooLarge`` as the adapter reads the body, which went to
    the last resort (400 "could not be handled", logged as an error); it is a 413."""
    flask_client.application.config["MAX_CONTENT_LENGTH"] = 100
    who = {"X-Visitor": "v-1", "X-User": "u-1", "Content-Type": "application/json"}
    body = json.dumps({"flow": "f1", "pad": "x" * 200}).encode()
    if chunked:  # no length: a server that de-chunks marks the stream as ending by itself
        answer = flask_client.post(
            "/activation/token",
            data=body,
            headers={**who, "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
    else:
        answer = flask_client.post("/activation/token", data=body, headers=who)
    assert answer.status_code == 413, answer.get_data()
    assert "100" in answer.get_json()["error"]
    assert not [line for line in logs if line.get("log_level") == "error"], logs
    small = flask_client.post("/activation/token", json={"flow": "f1"}, headers=who)
    assert "authenticationOption" in small.get_json()


# -- Django -----------------------------------------------------------------------------------

# What the settings dict names by dotted path; the fixture sets them.
TRACKER: Any = None
PROVIDER: Any = None
METRICS: Any = None
urlpatterns: list[Any] = []


def _django() -> None:
    """One Django configuration for this test process: a default middleware stack, CSRF on."""
    from django.conf import settings as django_settings

    if django_settings.configured:
        return
    django_settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only-" + "x" * 40,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
        INSTALLED_APPS=[],
        SECURED_ACTIVATION={
            "tracker": f"{__name__}.TRACKER",
            "visitor_id": f"{__name__}.visitor_of",
            "token_provider": f"{__name__}.PROVIDER",
            "metrics": f"{__name__}.METRICS",
        },
    )
    import django

    django.setup()


@pytest.fixture
def django_client(issuer: TokenIssuer, verifier: TokenVerifier) -> Any:
    _django()
    from django.test import Client
    from django.urls import clear_url_caches, include, path

    from statemachine.web.django import activation_urls, inspector_urls
    from statemachine.web.testing import standin_urls

    tracker = ActivationTracker(DefensivePolicy(), MemoryStore())
    metrics = ActivationMetrics()
    tracker.add_listener(metrics)
    globals().update(TRACKER=tracker, PROVIDER=provider_of(issuer), METRICS=metrics)
    urlpatterns[:] = [
        path("activation/", include(activation_urls())),  # every keyword from the settings
        path("", include(inspector_urls())),
        path(
            "",
            include(
                inspector_urls(
                    tracker,
                    metrics=None,
                    prefix="/guarded",
                    guard=lambda request: request.headers.get("x-admin") == "yes",
                )
            ),
        ),
        path("", include(standin_urls(LocalActivator(verifier)))),
    ]
    clear_url_caches()
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="127.0.0.1")
    client.tracker = tracker  # type: ignore[attr-defined]
    return client


def _post(client: Any, path: str, body: Any, **headers: str) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json", headers=headers)


def test_django_serves_the_flow_with_csrf_enforced(django_client: Any) -> None:
    who = {"X-Visitor": "v-1", "X-User": "u-1"}
    answer = _post(django_client, "/activation/token", {"flow": "f"}, **who)
    assert answer.status_code == 200, answer.content
    option = answer.json()["authenticationOption"]
    platform = _post(django_client, "/platform/activate", {"authenticationOption": option})
    assert platform.json()["authentication"]["status"] == "authentication-success"
    report = _post(django_client, "/activation/report", {"flow": "f", "activation": SUCCESS}, **who)
    assert report.json()["state"] == "authenticated"
    state = django_client.get("/activation/state", headers=who)
    assert state.json()["state"] == "authenticated"
    assert "text/javascript" in django_client.get("/activation/snippet.js")["Content-Type"]
    assert django_client.get("/tag.js").content.startswith(b"/* STAND-IN")
    scrape = django_client.get("/metrics").content.decode()
    assert 'secured_activation_outcomes_total{policy="defensive",reason="none"' in scrape
    assert _post(django_client, "/activation/logout", {}, **who).json() == {
        "state": "unauthenticated"
    }


def test_django_refusals_are_the_cores(django_client: Any) -> None:
    who = {"X-Visitor": "v-2", "X-User": "u-2"}
    wrong_method = django_client.get("/activation/token", headers=who)
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
    form = django_client.post("/activation/logout", {"a": "b"}, headers=who)
    assert form.status_code == 415  # the core's answer, not Django's CSRF 403 page
    cross = _post(django_client, "/activation/logout", {}, **who, Origin="http://evil.example")
    assert cross.status_code == 403
    assert "error" in cross.json()
    assert _post(django_client, "/activation/token", {"flow": "f"}).status_code == 401
    huge = _post(django_client, "/activation/token", {"flow": "x" * 70_000}, **who)
    assert huge.status_code == 413
    assert django_client.get("/inspect/visitors").status_code == 200
    proxied = django_client.get("/inspect/visitors", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403
    assert django_client.get("/guarded/visitors").status_code == 403
    assert django_client.get("/guarded/visitors", headers={"X-Admin": "yes"}).status_code == 200
    assert (
        django_client.get("/inspect/visitor/zz").status_code == 404
    )  # not a handle: no such visitor


def test_django_settings_must_name_what_is_not_passed() -> None:
    _django()
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from statemachine.web.django import activation_urls

    with override_settings(SECURED_ACTIVATION={}), pytest.raises(ImproperlyConfigured):
        activation_urls()


# -- the inspector on several workers ---------------------------------------------------------

INSPECTOR_SECRET = "the inspector's secret, shared by every worker"


def _authenticated(tracker: ActivationTracker, issuer: TokenIssuer, visitor: str) -> None:
    flow = "f1"
    reply = tracker.token_request(visitor, flow, partial(issuer.issue, "u-1"))
    assert reply.option is not None
    assert tracker.report(visitor, flow, SUCCESS).state.value == "authenticated"


def test_flask_inspector_workers_sharing_a_secret_open_each_others_handles(
    issuer: TokenIssuer,
) -> None:
    """The README runs Flask under ``gunicorn --workers 2``, and the inspector's page polls
    whichever worker answers: a handle sealed by one worker must open on the other, and the
    host's ``lookup`` must back the lookup box. ``inspector_blueprint`` took neither
    ``secret`` nor ``lookup``, so every worker sealed under a key of its own."""
    from flask import Flask

    from statemachine.web.flask import inspector_blueprint

    tracker = ActivationTracker(DefensivePolicy(), MemoryStore())  # the shared store
    _authenticated(tracker, issuer, "v-1")
    workers = []
    for _ in range(2):  # each worker builds its own blueprint, as each imports the module
        app = Flask(__name__)
        app.register_blueprint(
            inspector_blueprint(
                tracker,
                secret=INSPECTOR_SECRET,
                lookup=lambda query: "v-1" if query == "user 1" else None,
            )
        )
        workers.append(app.test_client())
    first, second = workers
    (row,) = first.get("/inspect/visitors").get_json()["visitors"]
    opened = second.get(f"/inspect/visitor/{row['handle']}")
    assert opened.status_code == 200, opened.get_data()
    assert opened.get_json()["ref"] == row["ref"]
    selected = second.get("/inspect/visitors", query_string={"selected": row["handle"]})
    assert selected.get_json()["selected"]["state"] == "authenticated"
    found = second.post("/inspect/lookup", json={"query": "user 1"})
    assert found.status_code == 200, found.get_data()
    assert found.get_json()["ref"] == row["ref"]


def test_django_inspector_workers_sharing_a_secret_open_each_others_handles(
    issuer: TokenIssuer,
) -> None:
    """The same for Django, the secret and the lookup given as keywords or in the settings
    dict (the secret as text there: not a dotted path to import)."""
    _django()
    from django.test import RequestFactory, override_settings

    from statemachine.web.django import inspector_urls

    tracker = ActivationTracker(DefensivePolicy(), MemoryStore())
    _authenticated(tracker, issuer, "v-1")
    globals().update(TRACKER=tracker)
    lookup = f"{__name__}.lookup_user_one"
    configured = {"tracker": f"{__name__}.TRACKER", "secret": INSPECTOR_SECRET, "lookup": lookup}
    with override_settings(SECURED_ACTIVATION=configured):
        from_settings = inspector_urls()
    by_keyword = inspector_urls(
        tracker, metrics=None, guard=None, secret=INSPECTOR_SECRET, lookup=lookup_user_one
    )
    views = [
        {p.name.rsplit("_", 1)[-1]: p.callback for p in urls}
        for urls in (from_settings, by_keyword)
    ]
    factory = RequestFactory(REMOTE_ADDR="127.0.0.1")
    listing = views[0]["visitors"](factory.get("/inspect/visitors"))
    (row,) = json.loads(listing.content)["visitors"]
    opened = views[1]["handle"](factory.get("/"), handle=row["handle"])
    assert opened.status_code == 200, opened.content
    assert json.loads(opened.content)["ref"] == row["ref"]
    for worker in views:
        asked = factory.post("/", json.dumps({"query": "user 1"}), content_type="application/json")
        found = worker["lookup"](asked)
        assert found.status_code == 200, found.content
        assert json.loads(found.content)["ref"] == row["ref"]


def lookup_user_one(query: str) -> str | None:
    """The host's search behind the lookup box (named by dotted path in the settings)."""
    return "v-1" if query == "user 1" else None


# -- never a 500 ------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)
_HEADERS = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "Origin", "Sec-Fetch-Site", "X-Visitor", "X-User", "Cookie", "Accept"]
    ),
    _TEXT,
    max_size=5,
)
_PATHS = st.sampled_from(
    [
        "/activation/token",
        "/activation/report",
        "/activation/logout",
        "/activation/state",
        "/activation/snippet.js",
        "/inspect",
        "/inspect/visitors",
        "/inspect/visitor/0123456789ab",
        "/metrics",
        "/platform/activate",
    ]
)
_BODIES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda flow: json.dumps({"flow": flow}).encode(), _TEXT),
    st.just(json.dumps({"flow": "f", "activation": SUCCESS}).encode()),
)
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=_PATHS,
    headers=_HEADERS,
    body=_BODIES,
)
def test_flask_never_answers_500(
    flask_client: Any, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    if path == "/platform/activate":
        path = "/dev/platform/activate"
    answer = flask_client.open(path, method=method, headers=headers, data=body)
    assert answer.status_code < 500, (answer.status_code, answer.get_data()[:200])


@FUZZ
@given(
    method=st.sampled_from(["get", "post", "put", "delete"]),
    path=_PATHS,
    headers=_HEADERS,
    body=_BODIES,
)
def test_django_never_answers_500(
    django_client: Any, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    kind = headers.pop("Content-Type", "application/json")
    call = getattr(django_client, method)
    if method == "get":
        answer = call(path, headers=headers)
    else:
        answer = call(path, body, content_type=kind or "text/plain", headers=headers)
    assert answer.status_code < 500, (answer.status_code, answer.content[:200])
