"""The standalone dashboard page (``dashboard/build``, a SvelteKit static SPA) served under ``/dashboard/``.

Served by the metrics service itself so that the page and ``/api/metrics`` share one origin: no CORS, and the
page's only runtime input is ``/dashboard/config.json`` (the Supabase URL and the public anon key — never
the service key or the JWT secret). The routes are plain Starlette routes, not API routes: they need no
token (the page signs in itself), stay out of the OpenAPI document, and accept any query string the SPA
uses (the API's "unknown query parameter" check is for API routes only).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from base64 import b64encode
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from meshhook_rt_metrics.api.errors import ApiError
from meshhook_rt_metrics.api.settings import ApiSettings

BASE = "/dashboard"
NOT_BUILT = "dashboard not built: run `make dashboard`"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)
# the types that matter for a module script and its assets, whatever the host's mime.types says
_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".webmanifest": "application/manifest+json",
    ".map": "application/json",
}


def content_type(path: Path) -> str:
    """A file's media type: a browser refuses a module script served as anything but JavaScript (nosniff)."""
    known = _TYPES.get(path.suffix.lower())
    return known or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def websocket_origin(url: str) -> str:
    """The ws/wss twin of an http(s) URL: Realtime connects there, and CSP treats it as another origin."""
    return "ws" + url.removeprefix("http") if url.startswith("http") else url


def content_security_policy(supabase_url: str | None, script_hashes: Iterable[str] = ()) -> str:
    """Scripts only from this origin (plus SvelteKit's inline boot script, by hash), network only to here
    and to Supabase (HTTP and Realtime), inline styles (Svelte transitions set them), never framed."""
    supabase = [supabase_url.rstrip("/"), websocket_origin(supabase_url.rstrip("/"))] if supabase_url else []
    scripts = ["'self'", *(f"'sha256-{digest}'" for digest in script_hashes)]
    directives = {
        "default-src": ["'self'"],
        "script-src": scripts,
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'", *supabase],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


def inline_script_hashes(html: str) -> list[str]:
    """SHA-256 (base64) of each inline ``<script>``: adapter-static boots the app from one, and a CSP without
    ``'unsafe-inline'`` must name it by hash. Computed from the file served, so a rebuild needs no restart."""
    return [
        b64encode(hashlib.sha256(body.encode()).digest()).decode() for body in _INLINE_SCRIPT.findall(html)
    ]


def secured(response: Response, csp: str) -> Response:
    """Every answer under /dashboard carries the page's security headers, error answers included."""
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["content-security-policy"] = csp
    return response


def is_traversal(relative: str) -> bool:
    """A request path that names something outside the build (``..``, absolute, backslashes, NUL) or a
    dotfile (the Makefile's build stamp): refused outright rather than answered with the SPA page."""
    if not relative:
        return False
    if relative.startswith("/") or "\\" in relative or "\x00" in relative:
        return True
    return any(part == ".." or part.startswith(".") for part in PurePosixPath(relative).parts)


def find_file(root: Path, relative: str) -> Path | None:
    """The regular file ``relative`` names inside ``root`` after resolving symlinks, else None: a symlink
    that leads out of the build is treated as absent, never followed."""
    try:
        candidate = (root / relative).resolve()
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(root) or not candidate.is_file():
        return None
    return candidate


class DashboardSite:
    """The routes' state: where the build is and what config.json says (both from :class:`ApiSettings`)."""

    def __init__(self, settings: ApiSettings) -> None:
        self.root = settings.dashboard_dir.resolve() if settings.dashboard_dir else None
        self.supabase_url = settings.supabase_url
        self.config = {
            "supabaseUrl": settings.supabase_url or "",
            "supabaseAnonKey": settings.supabase_anon_key or "",
            "apiUrl": "",  # same origin as the page
        }
        self.csp = content_security_policy(settings.supabase_url)

    def built(self) -> Path | None:
        """The build directory when it holds a page; checked per request, so ``make dashboard`` after the
        service started needs no restart."""
        if self.root is not None and (self.root / "index.html").is_file():
            return self.root
        return None

    def error(self, status: int, code: str, message: str) -> Response:
        return secured(ApiError(status, code, message).response(), self.csp)

    def redirect(self, request: Request) -> Response:
        """``/dashboard`` → ``/dashboard/``: the build's relative asset URLs and the SPA router expect it."""
        if self.built() is None:
            return self.error(404, "not_found", NOT_BUILT)
        query = request.url.query
        return secured(RedirectResponse(f"{BASE}/" + (f"?{query}" if query else ""), 307), self.csp)

    def config_json(self, _: Request) -> Response:
        """The page's runtime settings: one build serves every installation."""
        return secured(JSONResponse(self.config, headers={"cache-control": NO_CACHE}), self.csp)

    def page(self, root: Path) -> Response:
        """index.html, with a CSP that names its inline boot script by hash."""
        html = (root / "index.html").read_bytes().decode("utf-8")
        csp = content_security_policy(self.supabase_url, inline_script_hashes(html))
        response = Response(html, media_type="text/html", headers={"cache-control": NO_CACHE})
        return secured(response, csp)

    def asset(self, request: Request) -> Response:
        """A file of the build, else the SPA page (client-side routes) — but a missing ``_app/`` asset is a
        404: HTML in place of a stale chunk would only turn into a confusing MIME error in the browser."""
        root = self.built()
        if root is None:
            return self.error(404, "not_found", NOT_BUILT)
        relative = str(request.path_params.get("path", ""))
        if is_traversal(relative):
            return self.error(404, "not_found", "no such file")
        found = find_file(root, relative) if relative else None
        if found is None or found == root / "index.html":
            if relative.startswith("_app/"):
                return self.error(404, "not_found", "no such file")
            return self.page(root)
        immutable = found.is_relative_to(root / "_app" / "immutable")
        cache = IMMUTABLE if immutable else NO_CACHE
        return secured(
            FileResponse(found, media_type=content_type(found), headers={"cache-control": cache}), self.csp
        )


def dashboard_router(settings: ApiSettings) -> APIRouter:
    """The /dashboard routes (GET and HEAD, no authentication), for ``app.include_router``."""
    site = DashboardSite(settings)
    router = APIRouter()
    router.add_route(BASE, site.redirect, methods=["GET"], include_in_schema=False)
    router.add_route(f"{BASE}/config.json", site.config_json, methods=["GET"], include_in_schema=False)
    router.add_route(BASE + "/{path:path}", site.asset, methods=["GET"], include_in_schema=False)
    return router
