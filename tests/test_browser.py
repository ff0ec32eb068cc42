"""The whole flow in a real browser: Debian's Chromium, driven by Playwright, against the
reference host running as an OS process (``secured-activation serve``), offline.

The stand-in tag has the tag's API and its 3 retries; the platform endpoint runs
LocalActivator. Screenshots of the page and the inspector go to ``.artifacts/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web_host import ROOT, Host

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / ".artifacts" / "screenshots"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=["defensive", "anonymous"])
def host(request: pytest.FixtureRequest) -> Iterator[Host]:
    served = Host("--policy", request.param)
    served.policy = request.param  # type: ignore[attr-defined]
    yield served
    served.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    made = browser.new_context()
    yield made
    made.close()


def load(page: Any, url: str) -> dict[str, str]:
    """Open the page (it activates on load, as the tag does) and wait for the outcome."""
    page.goto(url)
    page.wait_for_selector("body[data-done='yes']", timeout=30_000)
    return dict(page.evaluate("() => ({...document.body.dataset})"))


def sign_in(context: Any, host: Host, user: str, *, wrong_key: bool = False) -> None:
    response = context.request.post(
        host.url + "/login", data={"user_id": user, "wrong_key": wrong_key}
    )
    assert response.status == 204


def test_signed_in_visitor_is_authenticated(context: Any, host: Host) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-42")
    seen = load(page, host.url + "/")
    assert seen["state"] == "authenticated"
    assert seen["tag"] == "SECURED_AUTHENTICATION"
    text = page.content()
    assert "eyJ" not in text  # the page never shows a token
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-authenticated-{host.policy}.png"), full_page=True)  # type: ignore[attr-defined]
    inspector = context.new_page()
    inspector.goto(host.url + "/inspect")
    inspector.wait_for_selector("g.state.current[data-state='authenticated']", timeout=15_000)
    assert "eyJ" not in inspector.content()
    assert "visitor-42" not in inspector.content()
    inspector.screenshot(path=str(ARTIFACTS / f"inspector-{host.policy}.png"), full_page=True)  # type: ignore[attr-defined]


def test_backend_cannot_mint(context: Any, host: Host) -> None:
    """Nobody signed in: defensive does not activate the tag at all; anonymous falls back."""
    page = context.new_page()
    seen = load(page, host.url + "/")
    calls = page.evaluate("() => window.iAdvize.calls")
    if host.policy == "defensive":  # type: ignore[attr-defined]
        assert seen["outcome"] == "not-activated"
        assert seen["tag"] == "none"
        assert calls == 0
        assert seen["state"] == "blocked"
    else:
        assert seen["state"] == "anonymous"
        assert seen["tag"] == "ANONYMOUS_AUTHENTICATION"


def test_a_wrong_key_follows_the_policy(context: Any, host: Host) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-7", wrong_key=True)
    seen = load(page, host.url + "/")
    state = page.evaluate("() => SecuredActivation.state()")
    if host.policy == "defensive":  # type: ignore[attr-defined]
        assert seen["state"] == "blocked"
        assert seen["tag"] == "none"
    else:
        assert seen["state"] == "anonymous"  # the anonymous policy falls back after a failure
        assert seen["tag"] == "ANONYMOUS_AUTHENTICATION"
    triggers = [entry["trigger"] for entry in state["history"]]
    assert "activation_failed_final" in triggers
    assert triggers.count("token_received") == 4  # the tag's 3 retries, each with a fresh token
    assert state["reason"] == "INVALID_SIGNATURE"


def test_two_tabs_at_once_make_one_login(context: Any, host: Host) -> None:
    first, second = context.new_page(), context.new_page()
    first.goto(host.url + "/?manual")
    second.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-2")
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
    starter.evaluate("() => localStorage.setItem('go', String(Date.now()))")
    outcomes = sorted(
        page.evaluate("() => window.pageActivation.then(r => r.outcome + '|' + (r.reason || ''))")
        for page in (first, second)
    )
    assert outcomes == ["activated|", "refused|A login is already ongoing"]
    state = first.evaluate("() => SecuredActivation.state()")
    assert state["state"] == "authenticated"
    assert [e["trigger"] for e in state["history"]].count("activate") == 1


def test_logout(context: Any, host: Host) -> None:
    page = context.new_page()
    page.goto(host.url + "/?manual")
    sign_in(context, host, "visitor-3")
    assert load(page, host.url + "/")["state"] == "authenticated"
    page.click("#logout")
    page.wait_for_selector("body[data-state='unauthenticated']", timeout=15_000)
    assert page.evaluate("() => window.iAdvize.activated") is None
    page.screenshot(path=str(ARTIFACTS / f"page-logged-out-{host.policy}.png"))  # type: ignore[attr-defined]


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


def test_a_form_on_another_origin_cannot_log_the_visitor_out(context: Any, host: Host) -> None:
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
    page.wait_for_selector("body[data-state='unauthenticated']", timeout=15_000)
