"""The README's FastAPI, Flask and Django hosts in a real browser (Debian's Chromium, driven by
Playwright): sign in, authenticated; two tabs, one login; logout — with the testing kit's
stand-in tag and platform mounted by the host, 2 workers, a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.chromium import NEEDS_CHROMIUM, launched_chromium
from tests.framework_hosts import FRAMEWORKS, start_on_own_redis
from tests.process_host import ProcessHost
from tests.test_browser import signal_while_the_first_flow_is_held

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture(scope="module", params=FRAMEWORKS)
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessHost]:
    framework = str(request.param)
    served, redis = start_on_own_redis(
        framework,
        tmp_path_factory.mktemp(f"redis-{framework}"),
        tmp_path_factory.mktemp(f"browser-{framework}"),
    )
    yield served
    served.stop()
    redis.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    made = browser.new_context()
    yield made
    made.close()


def sign_in(context: Any, host: ProcessHost, user: str) -> None:
    response = context.request.post(host.url + "/login", data={"user_id": user})
    assert response.status == 204


def load(page: Any, url: str) -> dict[str, str]:
    page.goto(url)
    page.wait_for_selector("body[data-done='yes']", timeout=30_000)
    return dict(page.evaluate("() => ({...document.body.dataset})"))


def test_sign_in_then_authenticated_then_logout(context: Any, host: ProcessHost) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")  # the visitor cookie, as on any first page
    sign_in(context, host, "browser-user")
    seen = load(page, host.url + "/")
    assert seen["state"] == "authenticated", seen
    assert seen["tag"] == "SECURED_AUTHENTICATION"
    assert "eyJ" not in page.content()
    assert "session" not in page.evaluate("() => document.cookie")  # the session is HttpOnly
    page.click("#logout")
    page.wait_for_selector("body[data-state='unauthenticated']", timeout=15_000)
    assert page.evaluate("() => window.iAdvize.activated") is None


def test_nobody_signed_in_is_not_activated(context: Any, host: ProcessHost) -> None:
    page = context.new_page()
    seen = load(page, host.url + "/")
    assert seen["tag"] == "none"  # defensive: the tag is not activated at all
    assert page.evaluate("() => window.iAdvize.calls") == 0


def test_two_tabs_at_once_make_one_login(context: Any, host: ProcessHost) -> None:
    first, second = context.new_page(), context.new_page()
    first.goto(host.url + "/?manual")
    second.goto(host.url + "/?manual")
    sign_in(context, host, "two-tabs")
    # Both tabs wait for one signal (a storage event reaches every other tab of the origin at
    # once), so their page loads' activations really start together.
    for page in (first, second):
        page.evaluate(
            """() => { window.pageActivation = new Promise(resolve => {
                   window.addEventListener("storage", () => resolve(run()), { once: true });
               }); }"""
        )
    starter = context.new_page()
    starter.goto(host.url + "/?manual")
    signal_while_the_first_flow_is_held(context, starter)
    for page in (first, second):
        page.evaluate("() => window.pageActivation")
    state = first.evaluate("() => SecuredActivation.state()")
    assert state["state"] == "authenticated"
    assert [entry["trigger"] for entry in state["history"]].count("activate") == 1
