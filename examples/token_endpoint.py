"""A brand backend's token endpoint, with nothing but the standard library and TokenIssuer.

    python examples/token_endpoint.py KEYS_DIR [--port 8080]

KEYS_DIR is what ``secured-activation keys generate KEYS_DIR`` wrote. ``POST
/token`` with ``{"userId": "..."}`` answers the tag-style mapping
``{"authenticationOption": {"type": "SECURED_AUTHENTICATION", "token": ...}}``.
A real backend would take the userId from its own signed-in session, never
from the request body: here it does so only to stay self-contained.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from statemachine.protocol.options import fingerprint
from statemachine.tokens import TokenError, TokenIssuer


def make_server(issuer: TokenIssuer, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/token":
                self.send_error(404)
                return
            length = min(int(self.headers.get("Content-Length", "0")), 4096)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                token = issuer.issue(body["userId"], body.get("visitorData"))
            except (ValueError, KeyError, TypeError, TokenError) as error:
                self._reply(400, {"error": type(error).__name__})
                return
            self._reply(
                200, {"authenticationOption": {"type": "SECURED_AUTHENTICATION", "token": token}}
            )
            sys.stderr.write(f"issued {fingerprint(token)}\n")

        def _reply(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")  # a token is a credential
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # the default access log would be noise here

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def serve_in_background(issuer: TokenIssuer) -> tuple[ThreadingHTTPServer, str]:
    server = make_server(issuer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/token"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", type=Path)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    issuer = TokenIssuer(
        args.keys / "brand_private.pem", args.keys / "platform_public.pem", "https://brand.example"
    )
    server = make_server(issuer, args.port)
    print(f"POST http://127.0.0.1:{args.port}/token", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
