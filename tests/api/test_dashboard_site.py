"""The standalone dashboard page at /dashboard/: files, SPA fallback, caching, config.json, path traversal.

A real uvicorn in front of a tiny fake build in tmp_path (no database: these routes never touch it), and raw
HTTP requests for the traversal cases, which an HTTP client would normalise before sending.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from meshhook_rt_metrics.api import ApiSettings, create_app
from meshhook_rt_metrics.api.dashboard_site import NOT_BUILT
from meshhook_rt_metrics.api.db import Database
from meshhook_rt_metrics.jwt_keys import JwtKeys
from tests.api.conftest import SECRET, free_port

SUPABASE_URL = "http://127.0.0.1:54321"
ANON_KEY = JwtKeys(SECRET).anon_key
BOOT = '\n  window.__boot = {base: "/dashboard"};\n  import("/dashboard/_app/immutable/x.js");\n'
INDEX = f'<!doctype html><html><body><div id="app"></div><script>{BOOT}</script></body></html>'
OUTSIDE = "TOP-SECRET-OUTSIDE-THE-BUILD"


class NoDatabase(Database):
    """The dashboard routes never query: no pool is opened."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


class Server:
    """create_app() on uvicorn in a thread, with the given settings."""

    def __init__(self, **settings: Any) -> None:
        self.port = free_port()
        config = ApiSettings(
            jwt_secret=SECRET,  # type: ignore[arg-type]
            supabase_url=SUPABASE_URL,
            supabase_anon_key=ANON_KEY,
            **settings,
        )
        app = create_app(config, database=NoDatabase("postgresql://127.0.0.1:1/unused"))
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def raw_get(self, target: str) -> tuple[int, str]:
        """GET with the request target sent exactly as given (``..`` and all): status and whole response."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode("latin-1")
        return int(text.split(" ", 2)[1]), text


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake adapter-static build in ``<tmp>/site``, next to files it must never serve."""
    base = tmp_path_factory.mktemp("dashboard")
    (base / "pyproject.toml").write_text(OUTSIDE)
    (base / "secret.txt").write_text(OUTSIDE)
    site = base / "site"
    (site / "_app" / "immutable").mkdir(parents=True)
    (site / "index.html").write_text(INDEX)
    (site / "_app" / "immutable" / "x.js").write_text("export const x = 1;\n")
    (site / "_app" / "version.json").write_text('{"version": "1"}')
    (site / "assets" / "nested").mkdir(parents=True)
    (site / "assets" / "nested" / "style.css").write_text("body { color: red; }\n")
    (site / "assets" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (site / ".built").write_text("")
    (site / "escape.txt").symlink_to(base / "secret.txt")
    return site


@pytest.fixture(scope="module")
def server(build: Path) -> Iterator[Server]:
    with Server(dashboard_dir=build) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def test_dashboard_without_slash_redirects_to_the_page(client: httpx.Client) -> None:
    response = client.get("/dashboard?project=p1")
    assert response.status_code == 307
    assert response.headers["location"] == "/dashboard/?project=p1"


def test_the_page_needs_no_token_and_takes_any_query(client: httpx.Client) -> None:
    response = client.get("/dashboard/", params={"project": "p1", "range": "1h"})
    assert response.status_code == 200
    assert response.text == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"


def test_files_have_their_content_types_and_cache_rules(client: httpx.Client) -> None:
    script = client.get("/dashboard/_app/immutable/x.js")
    assert script.status_code == 200 and script.text == "export const x = 1;\n"
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    nested = client.get("/dashboard/assets/nested/style.css")
    assert nested.status_code == 200 and nested.headers["content-type"].startswith("text/css")
    assert nested.headers["cache-control"] == "no-cache"
    assert client.get("/dashboard/assets/logo.svg").headers["content-type"] == "image/svg+xml"
    version = client.get("/dashboard/_app/version.json")
    assert version.headers["content-type"] == "application/json"
    assert version.headers["cache-control"] == "no-cache"
    assert client.head("/dashboard/_app/immutable/x.js").status_code == 200


def test_client_side_routes_get_the_page_but_missing_assets_do_not(client: httpx.Client) -> None:
    for path in ("/dashboard/projects/p1", "/dashboard/sign-in", "/dashboard/assets/nested"):
        response = client.get(path)
        assert response.status_code == 200 and response.text == INDEX, path
        assert response.headers["cache-control"] == "no-cache"
    stale = client.get("/dashboard/_app/immutable/gone.js")
    assert stale.status_code == 404 and stale.json()["code"] == "not_found"
    assert "immutable" not in stale.headers.get("cache-control", "")


def test_config_json_carries_the_public_settings_only(client: httpx.Client) -> None:
    response = client.get("/dashboard/config.json")
    assert response.status_code == 200
    assert response.json() == {"supabaseUrl": SUPABASE_URL, "supabaseAnonKey": ANON_KEY, "apiUrl": ""}
    assert response.headers["cache-control"] == "no-cache"
    assert SECRET not in response.text
    assert JwtKeys(SECRET).service_role_key not in response.text


def test_security_headers_and_csp(client: httpx.Client) -> None:
    response = client.get("/dashboard/")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    directives = response.headers["content-security-policy"].split("; ")
    csp = {name: value for name, _, value in (part.partition(" ") for part in directives)}
    boot = base64.b64encode(hashlib.sha256(BOOT.encode()).digest()).decode()
    assert csp["script-src"] == f"'self' 'sha256-{boot}'", "self scripts and the inline boot script only"
    assert csp["connect-src"] == f"'self' {SUPABASE_URL} ws://127.0.0.1:54321"
    assert csp["img-src"] == "'self' data:"
    assert csp["style-src"] == "'self' 'unsafe-inline'"
    assert csp["frame-ancestors"] == "'none'"
    for path in ("/dashboard/_app/immutable/x.js", "/dashboard/config.json", "/dashboard/_app/nope.js"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff" and "content-security-policy" in headers, path


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/../pyproject.toml",
        "/dashboard/../secret.txt",
        "/dashboard/%2e%2e/pyproject.toml",
        "/dashboard/%2E%2E%2Fsecret.txt",
        "/dashboard/assets/../../secret.txt",
        "/dashboard/..%5csecret.txt",
        "/dashboard/%00index.html",
        "/dashboard/.built",
    ],
)
def test_paths_out_of_the_build_are_404(server: Server, target: str) -> None:
    status, response = server.raw_get(target)
    assert status == 404, response
    assert OUTSIDE not in response


def test_absolute_paths_and_symlinks_out_of_the_build_are_never_followed(server: Server, build: Path) -> None:
    secret = build.parent / "secret.txt"
    for target in (
        f"/dashboard/{secret}",
        f"/dashboard/%2F{str(secret).lstrip('/')}",
        f"/dashboard/{'/' * 3}etc",
    ):
        status, response = server.raw_get(target)
        assert status == 404 and OUTSIDE not in response, target
    status, response = server.raw_get("/dashboard/escape.txt")
    assert OUTSIDE not in response and status in (200, 404)


def test_the_json_endpoints_are_unaffected(client: httpx.Client) -> None:
    assert client.get("/api/metrics", params={"project_id": "x", "metric": "m"}).status_code == 401
    assert client.get("/api/metrics/series", params={"bogus": "1"}).status_code in (401, 422)
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/dashboard")]


@pytest.mark.parametrize("where", ["unset", "missing"])
def test_without_a_build_dashboard_says_how_to_build_it(tmp_path: Path, where: str) -> None:
    directory = None if where == "unset" else tmp_path / "not-built"
    with Server(dashboard_dir=directory) as server, httpx.Client(base_url=server.url) as http:
        for path in ("/dashboard", "/dashboard/", "/dashboard/projects/p1"):
            response = http.get(path)
            assert response.status_code == 404, path
            assert response.json()["message"] == NOT_BUILT == "dashboard not built: run `make dashboard`"
            assert "content-security-policy" in response.headers
