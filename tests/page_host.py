"""A brand's site for the browser tests, as an OS process: the reference host's app, mounted
twice (at the root, and under ``/admin`` so the inspector runs at ``/admin/inspect``), plus
the pages of the boxed-tag protocol:

- ``/boxed?frame=URL&foreign=URL``: the brand's page, which boxes the tag in the iframe
  ``#chat`` (``SecuredActivation.activate({boxed: "chat"})``) next to a foreign iframe;
- ``/boxed-frame``: the iframe side of the documented protocol, run by a second process on
  another port (another origin): it activates the stand-in tag there, asks its host for each
  token with ``get-activate-auth-token`` and reports with ``activate``;
- ``/foreign-frame``: an iframe that must never receive a token: it asks for one again and
  again, and sends a forged ``activate`` result.

Both processes share the throwaway keys and the secret through the environment, as the
workers of ``secured-activation serve`` do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route

from tests.process_host import ServedModule

ROOT = Path(__file__).resolve().parents[1]

BOXED_HOST = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>boxed tag host</title>
<style>body { font-family: sans-serif; margin: 1.5rem; }
iframe { width: 440px; height: 200px; border: 1px solid #90a4ae; margin-right: 1rem; }</style>
</head><body>
<h1>A bank's page, with the tag boxed in a sandboxed iframe on another origin</h1>
<p id="result">activating…</p>
<script src="/activation/snippet.js"></script>
<script>
"use strict";
const query = new URLSearchParams(location.search);
for (const [id, name] of [["chat", "frame"], ["foreign", "foreign"]]) {
  const frame = document.createElement("iframe");
  frame.id = id;
  frame.title = id;
  frame.setAttribute("sandbox", "allow-scripts allow-same-origin");
  frame.src = query.get(name);
  document.body.appendChild(frame);
}
window.outcome = SecuredActivation.activate({ boxed: "chat" }).then((result) => {
  document.getElementById("result").textContent = JSON.stringify(result);
  document.body.dataset.outcome = result.outcome;
  document.body.dataset.done = "yes";
  return result;
});
</script></body></html>"""

BOXED_FRAME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>boxed tag</title></head>
<body style="font-family: sans-serif"><h3>The boxed tag (another origin)</h3>
<p id="status">waiting for the host</p>
<script src="/tag.js"></script>
<script>
"use strict";
// The iframe side of the boxed-tag protocol, as documented: messages {command: "internals",
// method, args}; the token is asked of the host with get-activate-auth-token and arrives as
// set-activate-auth-token; the activation's result goes back with method "activate".
window.tokensReceived = 0;
function askToken() {
  return new Promise((resolve) => {
    function onMessage(event) {
      if (event.source !== window.parent || !event.data || event.data.method !== "set-activate-auth-token") {
        return;
      }
      window.removeEventListener("message", onMessage);
      window.tokensReceived += 1;
      resolve(event.data.args);
    }
    window.addEventListener("message", onMessage);
    window.parent.postMessage({ command: "internals", method: "get-activate-auth-token" }, "*");
  });
}
window.addEventListener("message", ({ data }) => {
  if (!data || data.command !== "internals") { return; }
  if (data.method === "activate") {
    const type = data.args.authenticationOption.type;
    window.iAdvizeInterface.push(async (iAdvize) => {
      const activation = await iAdvize.activate(async () => {
        const token = type === "SECURED_AUTHENTICATION" ? await askToken() : null;
        return { authenticationOption: { type, token } };
      });
      const auth = activation.authentication;
      document.getElementById("status").textContent =
        auth.status + " (" + auth.option.type + ")" + (auth.reason ? ": " + auth.reason : "");
      document.body.dataset.activated = window.iAdvize.activated || "none";
      window.parent.postMessage({ command: "internals", method: "activate", activation }, "*");
    });
  } else if (data.method === "logout") {
    window.iAdvizeInterface.push(async (iAdvize) => {
      const logout = await iAdvize.logout();
      document.getElementById("status").textContent = "logged out";
      document.body.dataset.activated = "none";
      window.parent.postMessage({ command: "internals", method: "logout", logout }, "*");
    });
  }
});
</script></body></html>"""

FOREIGN_FRAME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>foreign frame</title></head>
<body style="font-family: sans-serif"><h3>A foreign iframe</h3><p id="status">asking…</p>
<script>
"use strict";
// Records every message it gets; asks the host for a token again and again, and forges an
// activation result. The host must answer none of it.
window.received = [];
window.addEventListener("message", (event) => { window.received.push(JSON.stringify(event.data)); });
window.asked = 0;
const timer = setInterval(() => {
  const asked = ++window.asked;
  window.parent.postMessage({ command: "internals", method: "get-activate-auth-token" }, "*");
  if (asked === 3) {
    window.parent.postMessage({ command: "internals", method: "activate", activation: {
      authentication: { option: { type: "SECURED_AUTHENTICATION" }, status: "authentication-success" },
    } }, "*");
  }
  document.getElementById("status").textContent = "asked " + asked + " times, got " + window.received.length;
  if (asked >= 100) { clearInterval(timer); }
}, 100);
</script></body></html>"""


def create_app() -> Starlette:
    from statemachine.web.reference import create_app as reference_app

    inner = reference_app()

    def page(text: str) -> Response:
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    async def boxed(_request: Request) -> Response:
        return page(BOXED_HOST)

    async def frame(_request: Request) -> Response:
        return page(BOXED_FRAME)

    async def foreign(_request: Request) -> Response:
        return page(FOREIGN_FRAME)

    return Starlette(
        routes=[
            Route("/boxed", boxed),
            Route("/boxed-frame", frame),
            Route("/foreign-frame", foreign),
            Mount("/admin", app=inner),
            Mount("", app=inner),
        ]
    )


class PageHost(ServedModule):
    """``create_app`` served by uvicorn in its own process group, on a free loopback port."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(["tests.page_host", "{port}"], "the host", env=env)


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    uvicorn.run(
        "tests.page_host:create_app", factory=True, host="127.0.0.1", port=port, log_level="warning"
    )


if __name__ == "__main__":
    main()
