"""The README's FastAPI, Flask and Django hosts, built as written and run as real processes.

Each host is the README's code, verbatim, in a fresh directory (Django: inside a project
made by ``django-admin startproject``, default middleware and all), plus a test-only
appendix that the README leaves to the brand: a sign-in route (FastAPI and Flask: the user
id into the signed session; Django: ``django.contrib.auth.login``), a page that loads the
testing kit's stand-in tag and the snippet, and the stand-in platform. Keys are generated
here; the processes are ``secured-activation run`` (FastAPI) or gunicorn (Flask, Django),
2 workers, one real Redis, and a fresh ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from statemachine.tokens.keys import generate_rsa, private_pem, public_pem
from tests.process_host import ProcessHost
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FRAMEWORKS = ("fastapi", "flask", "django")
_SECTIONS = {"fastapi": "### FastAPI", "flask": "### Flask", "django": "### Django"}
_NEXT = {"fastapi": "### Flask", "flask": "### Django", "django": "### Testing kit: "}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>host</title></head>
<body>
<button id="logout">log out</button>
<script src="/tag.js"></script>
<script src="/activation/snippet.js"></script>
<script>
"use strict";
async function run() {
  const result = await SecuredActivation.activate();
  const state = await SecuredActivation.state();
  document.body.dataset.outcome = result.outcome;
  document.body.dataset.state = state.state;
  document.body.dataset.tag = window.iAdvize.activated || "none";
  document.body.dataset.done = "yes";
  return result;
}
document.getElementById("logout").onclick = async () => {
  await SecuredActivation.logout();
  document.body.dataset.state = (await SecuredActivation.state()).state;
};
window.pageActivation = new URLSearchParams(location.search).has("manual") ? null : run();
</script>
</body></html>
"""

STANDIN = """
from statemachine.hostcalls.activator import LocalActivator as _LocalActivator
from statemachine.tokens import TokenVerifier as _TokenVerifier

_activator = _LocalActivator(_TokenVerifier(
    "keys/platform_private.pem", "keys/brand_public.pem", issuer="https://brand.example"
))
_PAGE = {page!r}
"""

APPENDIX = {
    "fastapi": STANDIN
    + """
# -- test only: a sign-in, a page, the testing kit's stand-ins --
from fastapi.responses import HTMLResponse as _HTMLResponse, Response as _Response
from statemachine.web.testing import standin_routes as _standin_routes


@app.post("/login")
async def _login(request: Request):
    request.session["user_id"] = (await request.json())["user_id"]
    return _Response(status_code=204)


@app.get("/")
async def _page():
    return _HTMLResponse(_PAGE)


app.include_router(APIRouter(routes=_standin_routes(_activator)))
""",
    "flask": STANDIN
    + """
# -- test only: a sign-in, a page, the testing kit's stand-ins --
from flask import request as _request
from statemachine.web.testing import standin_blueprint as _standin_blueprint


@app.post("/login")
def _login():
    session["user_id"] = _request.get_json()["user_id"]
    return "", 204


@app.get("/")
def _page():
    return _PAGE


app.register_blueprint(_standin_blueprint(_activator))
""",
    "django": STANDIN
    + """
# -- test only: a sign-in, a page, the testing kit's stand-ins --
import json as _json

from django.contrib.auth import login as _auth_login
from django.contrib.auth.models import User as _User
from django.http import HttpResponse as _HttpResponse
from django.views.decorators.csrf import csrf_exempt as _csrf_exempt
from statemachine.web.testing import standin_urls as _standin_urls


@_csrf_exempt
def _login(request):
    name = _json.loads(request.body)["user_id"]
    user, _ = _User.objects.get_or_create(username=name)
    _auth_login(request, user)
    return _HttpResponse(status=204)


def _page(request):
    return _HttpResponse(_PAGE)


urlpatterns += [
    path("login", _login),
    path("", _page),
    path("", include(_standin_urls(_activator))),
]
""",
}


def readme_files(framework: str) -> dict[str, str]:
    """The README's Python blocks for ``framework``, by the file named on their first line."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(_SECTIONS[framework] + "\n")
    text = readme[start : readme.index(_NEXT[framework], start)]
    files = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        first = block.splitlines()[0]
        assert first.startswith("# "), first
        files[first[2:].split(",")[0].strip()] = block
    return files


def glue_lines(framework: str) -> list[str]:
    """The README sample's lines that are there for secured-activation: code lines that are
    neither imports nor the framework's own boilerplate (making the app, its session secret,
    the URL list's brackets)."""
    boilerplate = re.compile(
        r"^(app = (FastAPI|Flask)\(|app\.add_middleware\(SessionMiddleware|"
        r"app\.config\.update\(SECRET_KEY|SECRET_KEY = |SESSION_ENGINE = |urlpatterns = \[$|\]$)"
    )
    lines = []
    for code in readme_files(framework).values():
        for line in code.splitlines():
            bare = line.strip()
            if not bare or bare.startswith("#") or re.match(r"(import|from) \S", line):
                continue
            if boilerplate.match(bare):
                continue
            lines.append(line)
    return lines


def write_keys(directory: Path) -> None:
    directory.mkdir()
    for name in ("brand", "platform"):
        key = generate_rsa()
        fd = os.open(directory / f"{name}_private.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem(key))
        (directory / f"{name}_public.pem").write_bytes(public_pem(key))


def build(framework: str, directory: Path) -> list[str]:
    """Write the host into ``directory``; the command that runs it on 2 workers."""
    files = readme_files(framework)
    write_keys(directory / "keys")
    appendix = APPENDIX[framework].replace("{page!r}", repr(PAGE))
    if framework in ("fastapi", "flask"):
        (directory / "host.py").write_text(files["host.py"] + appendix)
    else:
        subprocess.run(
            [sys.executable, "-m", "django", "startproject", "myhost", str(directory)],
            check=True,
            timeout=120,
        )
        (directory / "myhost" / "activation.py").write_text(files["myhost/activation.py"])
        settings = directory / "myhost" / "settings.py"
        settings.write_text(settings.read_text() + "\n" + files["myhost/settings.py"])
        (directory / "myhost" / "urls.py").write_text(files["myhost/urls.py"] + appendix)
    if framework == "fastapi":
        return [
            str(BIN / "secured-activation"),
            "run",
            "host:app",
            "--workers",
            "2",
            "--port",
            "{port}",
        ]
    target = "host:app" if framework == "flask" else "myhost.wsgi"
    return [
        str(BIN / "gunicorn"),
        "--workers",
        "2",
        "--threads",
        "4",
        "--bind",
        "127.0.0.1:{port}",
        target,
    ]


def start(framework: str, directory: Path, redis_url: str) -> ProcessHost:
    """Build and start the host; ``ProcessHost.stop`` ends it."""
    directory.mkdir(parents=True, exist_ok=True)
    command = build(framework, directory)
    metrics = directory / "metrics"
    metrics.mkdir()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SESSION_SECRET": secrets.token_hex(32),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    env.pop("PYTHONPATH", None)  # the editable install, as the README has it
    if framework == "django":
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"],
            cwd=directory,
            env=env,
            check=True,
            timeout=300,
        )
    return ProcessHost(command, cwd=directory, env=env)


def start_on_own_redis(
    framework: str, redis_directory: Path, host_directory: Path
) -> tuple[ProcessHost, RedisServer]:
    """A fresh redis-server and ``framework``'s host on it; the server is stopped if the host
    does not start."""
    redis = RedisServer(redis_directory).start()
    try:
        return start(framework, host_directory, redis.url), redis
    except Exception:
        redis.stop()
        raise
