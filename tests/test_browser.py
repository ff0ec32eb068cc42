"""The page and the inspector in a real browser: Debian's Chromium, driven by Playwright,
against the reference host's app running as OS processes (``tests/page_host.py``), offline.

The stand-in tag has the tag's API and its 3 retries; the platform endpoint runs
LocalActivator. A second process on another port is the other origin the boxed tag lives
on. Screenshots of every scene go to ``.artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from statemachine.web.reference import ENV_KEYS, ENV_POLICY, ENV_SECRET, write_keys
from statemachine.web.svg import CURRENT
from tests.chromium import NEEDS_CHROMIUM, launched_chromium
from tests.page_host import ROOT, PageHost

ARTIFACTS = ROOT / ".artifacts" / "screenshots"
WAIT = 30_000  # ms: generous, the machine is shared

pytestmark = NEEDS_CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Throwaway keys and secret that every process of the run shares, as serve's workers do."""
    keys = tmp_path_factory.mktemp("keys")
    write_keys(keys)
    return {ENV_KEYS: str(keys), ENV_SECRET: secrets.token_hex(32)}


@pytest.fixture(scope="module", params=["defensive", "anonymous"])
def host(request: pytest.FixtureRequest, shared: dict[str, str]) -> Iterator[PageHost]:
    served = PageHost({**shared, ENV_POLICY: request.param})
    served.policy = request.param  # type: ignore[attr-defined]
    yield served
    served.stop()


@pytest.fixture(scope="module")
def other_origin(shared: dict[str, str]) -> Iterator[PageHost]:
    """A second server on another port: the boxed tag's origin (and a foreign frame's)."""
    served = PageHost({**shared, ENV_POLICY: "defensive"})
    yield served
    served.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    made = browser.new_context(viewport={"width": 1180, "height": 900})
    yield made
    made.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def policy_of(host: PageHost) -> str:
    return str(host.policy)  # type: ignore[attr-defined]


def load(page: Any, url: str) -> dict[str, str]:
    """Open the page (it activates on load, as the tag does) and wait for the outcome."""
    page.goto(url)
    page.wait_for_selector("body[data-done='yes']", timeout=WAIT)
    return dict(page.evaluate("() => ({...document.body.dataset})"))


def sign_in(context: Any, host: PageHost, user: str, *, wrong_key: bool = False) -> None:
    response = context.request.post(
        host.url + "/login",
        data=json.dumps({"user_id": user, "wrong_key": wrong_key}),
        headers={"Content-Type": "application/json", "Origin": host.url},
    )
    assert response.status == 204


def listed(context: Any, host: PageHost) -> int:
    body = context.request.get(host.url + "/admin/inspect/visitors").json()
    return int(body["counts"]["visitors"])


def test_signed_in_visitor_is_authenticated(context: Any, host: PageHost) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-42")
    seen = load(page, host.url + "/")
    assert seen["state"] == "authenticated"
    assert seen["status"] == "authenticated"
    assert seen["outcome"] == "activated"
    assert seen["tag"] == "SECURED_AUTHENTICATION"
    assert page.inner_text("#who") == "Signed in as visitor-42."
    assert page.inner_text("#status") == "Chat activated: signed in."
    assert "eyJ" not in page.content()  # the page never shows a token
    shot(page, f"page-authenticated-{policy_of(host)}")


def test_nobody_signed_in(context: Any, host: PageHost) -> None:
    """Defensive: not activated, said calmly, and no record; anonymous: activated anonymously."""
    before = listed(context, host)
    page = context.new_page()
    seen = load(page, host.url + "/")
    result = page.evaluate("() => window.pageActivation")
    assert result["signedIn"] is False
    assert page.inner_text("#who") == "Not signed in."
    if policy_of(host) == "defensive":
        assert seen["outcome"] == "not-activated"
        assert seen["status"] == "not-signed-in"  # not the red "blocked" of a failure
        assert seen["tag"] == "none"
        assert page.evaluate("() => window.iAdvize.calls") == 0
        assert seen["state"] == "unauthenticated"
        assert listed(context, host) == before  # no store record for a visitor nobody signed in
        assert "blocked" not in page.inner_text("#status")
    else:
        assert seen["outcome"] == "activated"
        assert seen["state"] == "anonymous"
        assert seen["status"] == "anonymous"
        assert seen["tag"] == "ANONYMOUS_AUTHENTICATION"
        assert page.inner_text("#status") == "Chat activated anonymously."
        assert "failed" not in page.inner_text("#detail")  # nobody signed in: nothing failed
    shot(page, f"page-not-signed-in-{policy_of(host)}")


def test_a_wrong_key_follows_the_policy_and_says_why(context: Any, host: PageHost) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-7", wrong_key=True)
    seen = load(page, host.url + "/")
    state = page.evaluate("() => SecuredActivation.state()")
    if policy_of(host) == "defensive":
        assert seen["state"] == "blocked"
        assert seen["status"] == "blocked"
        assert seen["outcome"] == "failed"
        assert seen["tag"] == "none"
        assert "The token signature is invalid" in page.inner_text("#status")
    else:
        assert seen["state"] == "anonymous"  # the anonymous policy falls back after a failure
        assert seen["outcome"] == "activated"
        assert seen["tag"] == "ANONYMOUS_AUTHENTICATION"
    assert "INVALID_SIGNATURE" in page.inner_text("#detail")
    triggers = [entry["trigger"] for entry in state["history"]]
    assert "activation_failed_final" in triggers
    assert triggers.count("token_received") == 4  # the tag's 3 retries, each with a fresh token
    assert state["reason"] == "INVALID_SIGNATURE"
    retried = [entry["reason"] for entry in state["history"] if entry["dest"] == "retrying"]
    assert retried == ["UNKNOWN"] * 3  # the tag did not say why it retried: nobody invents it
    shot(page, f"page-wrong-key-{policy_of(host)}")


def signal_while_the_first_flow_is_held(context: Any, starter: Any) -> None:
    """Send the tabs' "go" signal and make their flows overlap for certain, not by luck.

    A loaded machine may schedule one tab's renderer late, and a token request that arrives
    after the first flow ended is a legitimate refresh, not a second tab racing. So the first
    flow's report (which ends it) is held until another tab's token request has been refused;
    only then does the first flow finish.
    """
    held: list[Any] = []
    released = False

    def hold_report(route: Any) -> None:
        if released:
            route.continue_()
        else:
            held.append(route)

    context.route("**/activation/report", hold_report)
    with context.expect_event(
        "response",
        lambda response: response.url.endswith("/activation/token") and response.status == 409,
        timeout=WAIT,
    ):
        starter.evaluate("() => localStorage.setItem('go', String(Date.now()))")
    released = True
    for route in held:
        route.continue_()


def test_a_second_tab_activates_by_itself(context: Any, host: PageHost) -> None:
    sign_in(context, host, "visitor-2")
    first, second = context.new_page(), context.new_page()
    first.goto(host.url + "/?manual")
    second.goto(host.url + "/?manual")
    # Both tabs wait for one signal (a storage event reaches every other tab of the origin at
    # once), so their page loads' activations really start together.
    for page in (first, second):
        page.evaluate(
            """() => { window.pageActivation = new Promise(resolve => {
                   window.addEventListener("storage", (event) => {
                       if (event.key === "go") { resolve(run()); }
                   });
               }); }"""
        )
    starter = context.new_page()
    starter.goto(host.url + "/?manual")
    started = time.monotonic()
    signal_while_the_first_flow_is_held(context, starter)
    results = [page.evaluate("() => window.pageActivation") for page in (first, second)]
    elapsed = time.monotonic() - started
    print(f"both tabs activated {elapsed:.2f} s after the signal")
    assert elapsed < 15
    assert [r["outcome"] for r in results] == ["activated", "activated"]
    assert sorted(bool(r.get("waited")) for r in results) == [False, True]
    for page in (first, second):
        assert page.evaluate("() => window.iAdvize.activated") == "SECURED_AUTHENTICATION"
        assert page.get_attribute("body", "data-status") == "authenticated"
        assert page.inner_text("#who") == "Signed in as visitor-2."
    state = first.evaluate("() => SecuredActivation.state()")
    assert state["state"] == "authenticated"
    assert [e["trigger"] for e in state["history"]].count("activate") == 1  # one login
    waited = first if results[0].get("waited") else second
    shot(waited, f"page-second-tab-{policy_of(host)}")


def test_logout_leaves_nothing_stale_and_the_trail_stays(context: Any, host: PageHost) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-3")
    assert load(page, host.url + "/")["state"] == "authenticated"
    page.click("#logout")
    page.wait_for_selector("body[data-outcome='logged-out']", timeout=WAIT)
    assert page.get_attribute("body", "data-state") == "unauthenticated"
    assert page.evaluate("() => window.iAdvize.activated") is None
    assert page.inner_text("#status") == "Logged out of the chat: not activated."
    assert page.inner_text("#tag") == "not activated"
    assert "authenticated" not in page.inner_text("#status")
    shot(page, f"page-logged-out-{policy_of(host)}")
    # A support person still finds the visitor and the flow it ended.
    inspector = context.new_page()
    inspector.goto(host.url + "/admin/inspect")
    inspector.fill("#query", "visitor-3")
    inspector.click("#lookup button")
    inspector.wait_for_selector("body[data-selected-state='unauthenticated']", timeout=WAIT)
    trail = inspector.inner_text("#history")
    assert "activation_succeeded" in trail
    assert "logout" in trail
    shot(inspector, f"inspector-trail-after-logout-{policy_of(host)}")


def test_inspector_under_a_prefix_with_colours_lookup_and_counts(
    context: Any, host: PageHost
) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "alice")
    assert load(page, host.url + "/")["state"] == "authenticated"
    inspector = context.new_page()
    polls: list[float] = []
    inspector.on(
        "request",
        lambda request: (
            polls.append(time.monotonic()) if "/inspect/visitors" in request.url else None
        ),
    )
    inspector.goto(host.url + "/admin/inspect")
    inspector.wait_for_selector("body[data-ready='yes']", timeout=WAIT)
    inspector.wait_for_timeout(3_000)
    assert 2 <= len(polls) <= polls[-1] - polls[0] + 2  # one request a second, at most
    counts = inspector.inner_text("#counts")
    assert "authenticated" in counts
    assert "visitors" in counts
    inspector.fill("#query", "alice")
    inspector.click("#lookup button")
    inspector.wait_for_selector("body[data-selected-state='authenticated']", timeout=WAIT)
    current = inspector.locator("#diagram g.state.current")
    assert current.get_attribute("data-state") == "authenticated"
    assert current.locator("rect").get_attribute("fill") == CURRENT["authenticated"].fill
    assert inspector.locator("#diagram text.edge-label").count() >= 20
    assert "alice" not in inspector.inner_text("#visitors")
    assert "eyJ" not in inspector.content()
    shot(inspector, f"inspector-lookup-{policy_of(host)}")
    # A visitor whose sign-in failed: red under the defensive policy, with what to check.
    other = context.browser.new_context()
    try:
        failing = other.new_page()
        failing.goto(host.url + "/?manual")
        sign_in(other, host, "bob", wrong_key=True)
        expected = "blocked" if policy_of(host) == "defensive" else "anonymous"
        assert load(failing, host.url + "/")["state"] == expected
    finally:
        other.close()
    inspector.fill("#query", "bob")
    inspector.click("#lookup button")
    inspector.wait_for_selector(f"body[data-selected-state='{expected}']", timeout=WAIT)
    rect = inspector.locator("#diagram g.state.current rect")
    assert rect.get_attribute("fill") == CURRENT[expected].fill
    assert "Sign with the brand private key" in inspector.inner_text("#why")
    inspector.wait_for_function(
        "() => document.querySelector('#counts [data-reason=\"INVALID_SIGNATURE\"]') !== null",
        timeout=WAIT,
    )
    shot(inspector, f"inspector-failure-{policy_of(host)}")


def test_the_boxed_tag_gets_tokens_and_a_foreign_frame_none(
    context: Any, host: PageHost, other_origin: PageHost
) -> None:
    if policy_of(host) != "defensive":
        pytest.skip("one policy is enough for the iframe protocol")
    sign_in(context, host, "banker")
    page = context.new_page()
    frame_url = other_origin.url + "/boxed-frame"
    foreign_url = other_origin.url + "/foreign-frame"
    seen = load(page, f"{host.url}/boxed?frame={frame_url}&foreign={foreign_url}")
    result = page.evaluate("() => window.outcome")
    assert seen["outcome"] == "activated"
    assert result["state"] == "authenticated"
    assert "eyJ" not in json.dumps(result)  # the result carries no token
    chat = next(f for f in page.frames if f.url.startswith(frame_url))
    foreign = next(f for f in page.frames if f.url.startswith(foreign_url))
    assert chat.evaluate("() => window.iAdvize.activated") == "SECURED_AUTHENTICATION"
    assert chat.evaluate("() => window.tokensReceived") == 1
    # Let the foreign frame keep asking for a while (and forge a result) before looking.
    foreign.wait_for_function("() => window.asked >= 10", timeout=WAIT)
    assert foreign.evaluate("() => window.received") == []
    state = page.evaluate("() => SecuredActivation.state()")
    assert [e["trigger"] for e in state["history"]].count("activation_succeeded") == 1
    shot(page, "boxed-tag-authenticated")
    # Logging out reaches the boxed tag too.
    page.evaluate("() => SecuredActivation.logout({ boxed: 'chat' })")
    assert chat.evaluate("() => window.iAdvize.activated") is None
    assert page.evaluate("() => SecuredActivation.state()")["state"] == "unauthenticated"
    assert foreign.evaluate("() => window.received") == []
    # No such iframe: a clear error, nothing sent anywhere.
    refused = page.evaluate(
        "() => SecuredActivation.activate({ boxed: 'nope' }).then(() => 'ok', e => e.message)"
    )
    assert "no iframe with the id" in refused


def test_a_forged_result_from_a_foreign_frame_changes_nothing(
    context: Any, host: PageHost, other_origin: PageHost
) -> None:
    """The real boxed activation fails (a wrong key, 4 attempts); the foreign frame's forged
    success, sent meanwhile, must not make the visitor authenticated."""
    if policy_of(host) != "defensive":
        pytest.skip("one policy is enough for the iframe protocol")
    sign_in(context, host, "mallory-victim", wrong_key=True)
    page = context.new_page()
    frame_url = other_origin.url + "/boxed-frame"
    foreign_url = other_origin.url + "/foreign-frame"
    seen = load(page, f"{host.url}/boxed?frame={frame_url}&foreign={foreign_url}")
    result = page.evaluate("() => window.outcome")
    assert seen["outcome"] == "failed"
    assert result["state"] == "blocked"
    chat = next(f for f in page.frames if f.url.startswith(frame_url))
    foreign = next(f for f in page.frames if f.url.startswith(foreign_url))
    assert chat.evaluate("() => window.tokensReceived") == 4  # the tag's retries asked again
    foreign.wait_for_function("() => window.asked >= 3", timeout=WAIT)  # it forged its result
    assert foreign.evaluate("() => window.received") == []
    state = page.evaluate("() => SecuredActivation.state()")
    assert state["state"] == "blocked"
    assert "activation_succeeded" not in [e["trigger"] for e in state["history"]]
    shot(page, "boxed-tag-wrong-key")


def test_a_tab_refused_by_another_device_polls_then_follows_or_gives_up(
    context: Any, host: PageHost
) -> None:
    """The flow in flight belongs to no tab of this browser (another device, say): no message
    will come, so the refused tab polls the state endpoint; it follows the outcome once the
    flow ends, and gives up after its bound when it never does — never a second login."""
    sign_in(context, host, "visitor-5")
    page = context.new_page()
    page.goto(host.url + "/?manual")
    headers = {"Content-Type": "application/json", "Origin": host.url}

    def token(flow: str) -> Any:
        return context.request.post(
            host.url + "/activation/token", data=json.dumps({"flow": flow}), headers=headers
        )

    assert token("other-device").status == 200  # that flow holds the visitor now
    page.evaluate("() => { window.waiting = SecuredActivation.activate({ waitMs: 20000 }); }")
    page.wait_for_timeout(1_500)  # the tab was refused and is polling
    done = {
        "authentication": {
            "option": {"type": "SECURED_AUTHENTICATION"},
            "status": "authentication-success",
        }
    }
    report = context.request.post(
        host.url + "/activation/report",
        data=json.dumps({"flow": "other-device", "activation": done}),
        headers=headers,
    )
    assert report.json()["state"] == "authenticated"
    result = page.evaluate("() => window.waiting")
    assert result["outcome"] == "activated"
    assert result["waited"] is True
    assert page.evaluate("() => window.iAdvize.activated") == "SECURED_AUTHENTICATION"
    state = page.evaluate("() => SecuredActivation.state()")
    assert [e["trigger"] for e in state["history"]].count("activate") == 1
    # A flow that never ends: the tab gives up after its bound, having logged in nobody.
    page.evaluate("() => SecuredActivation.logout()")
    assert token("a-silent-device").status == 200
    started = time.monotonic()
    result = page.evaluate("() => SecuredActivation.activate({ waitMs: 2000 })")
    assert time.monotonic() - started < 15
    assert result["outcome"] == "error"
    assert result["reason"] == "A login is already ongoing"
    state = page.evaluate("() => SecuredActivation.state()")
    assert state["state"] == "activating"  # still the other device's flow, untouched
    assert page.evaluate("() => window.iAdvize.calls") == 1  # the tag was not called again


class Sibling:
    """A second site on another loopback port whose page posts a plain HTML form to the host."""

    def __init__(self, target: str) -> None:
        import http.server
        import threading

        page = f"""<!doctype html><html><body>
<form id="form" method="POST" action="{target}/activation/logout">
  <input name="flow" value="x"><button id="send-form">win a prize</button></form>
<form id="text" method="POST" action="{target}/activation/logout" enctype="text/plain">
  <input name='{{"flow": "' value='x"}}'><button id="send-text">win another</button></form>
</body></html>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *_args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_a_form_on_another_origin_cannot_log_the_visitor_out(context: Any, host: PageHost) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-5")
    assert load(page, host.url + "/")["state"] == "authenticated"
    sibling = Sibling(host.url)
    try:
        attacker = context.new_page()
        for button in ("#send-form", "#send-text"):
            attacker.goto(sibling.url)
            with attacker.expect_response(lambda r: r.url.endswith("/activation/logout")) as sent:
                attacker.click(button)
            response = sent.value
            assert response.status == 403
            assert response.json() == {"error": "cross-origin state changes are refused"}
            headers = response.request.all_headers()
            assert headers["origin"] == sibling.url.rstrip("/")  # another port: another origin
            assert "sa_visitor=" in headers.get("cookie", "")  # same site: the cookie went along
        # A script on the sibling page cannot do it either (no-cors: it cannot even read why).
        attacker.goto(sibling.url)
        attacker.evaluate(
            """url => fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
                                  headers: {"Content-Type": "text/plain"}, body: "{}"})""",
            host.url + "/activation/logout",
        )
    finally:
        sibling.stop()
    state = page.evaluate("() => SecuredActivation.state()")
    assert state["state"] == "authenticated"  # the visitor is still signed in
    assert "logout" not in [entry["trigger"] for entry in state["history"]]
    page.click("#logout")  # the page's own same-origin JSON request works
    page.wait_for_selector("body[data-state='unauthenticated']", timeout=WAIT)
