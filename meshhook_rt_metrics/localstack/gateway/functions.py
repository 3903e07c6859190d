"""Edge-function host: ``/functions/v1/<name>`` runs ``supabase/functions/<name>/index.ts`` under Deno.

Each function gets one Deno process, started on first request and restarted if it dies, with the
environment Supabase gives edge functions (``SUPABASE_URL``, the keys, ``SUPABASE_DB_URL``). A small
bootstrap module pins the function's ``Deno.serve`` to a private loopback port; the gateway proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import tomllib
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshhook_rt_metrics.localstack.gateway.auth import AuthFailure, authenticate
from meshhook_rt_metrics.localstack.gateway.config import GatewayConfig

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
START_TIMEOUT = 120.0
"""The first start may download npm packages into the Deno cache."""
HOP_HEADERS = {
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "te",
    "trailer",
}

BOOTSTRAP = """\
// Written by meshhook-metrics: runs one edge function on the port the gateway chose.
const port = Number(Deno.env.get("MESHHOOK_FUNCTION_PORT"));
const main = Deno.env.get("MESHHOOK_FUNCTION_MAIN")!;
const realServe = Deno.serve.bind(Deno);
let served = false;
// deno-lint-ignore no-explicit-any
(Deno as any).serve = (...args: any[]) => {
  // deno-lint-ignore no-explicit-any
  let options: any = {};
  // deno-lint-ignore no-explicit-any
  let handler: any;
  if (typeof args[0] === "function") {
    handler = args[0];
    options = args[1] ?? {};
  } else {
    options = args[0] ?? {};
    handler = args[1] ?? options.handler;
  }
  served = true;
  const { handler: _ignored, ...rest } = options;
  return realServe({ ...rest, port, hostname: "127.0.0.1", onListen: () => {} }, handler);
};
await import(main);
if (!served) {
  console.error("edge function did not call Deno.serve()");
  Deno.exit(1);
}
"""


def find_deno(explicit: str | None) -> str | None:
    """``--deno``/``MESHHOOK_METRICS_DENO``, then ``deno`` on PATH, then ``node_modules/.bin/deno`` here."""
    for candidate in (explicit, os.environ.get("MESHHOOK_METRICS_DENO"), shutil.which("deno")):
        if candidate and Path(candidate).exists():
            return candidate
    local = Path.cwd() / "node_modules" / ".bin" / "deno"
    return str(local) if local.exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FunctionProcess:
    def __init__(self, name: str, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.port = port
        self.proc = proc

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class FunctionsHost:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.functions_dir = config.functions_dir
        self.deno = find_deno(config.deno)
        self.work_dir = (config.deno_dir or Path.home() / ".cache" / "meshhook-metrics" / "deno").resolve()
        self.processes: dict[str, FunctionProcess] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(150.0, connect=5.0))

    async def close(self) -> None:
        for process in self.processes.values():
            if process.alive:
                process.proc.terminate()
        for process in self.processes.values():
            try:
                await asyncio.to_thread(process.proc.wait, 5)
            except subprocess.TimeoutExpired:
                process.proc.kill()
        await self.client.aclose()

    def _verify_jwt(self, name: str) -> bool:
        """``[functions.<name>] verify_jwt`` in supabase/config.toml, default true as on Supabase."""
        if self.functions_dir is None:
            return True
        config = self.functions_dir.parent / "config.toml"
        if not config.exists():
            return True
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            return True
        return bool(data.get("functions", {}).get(name, {}).get("verify_jwt", True))

    def _environment(self, port: int, main: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SUPABASE_", "MESHHOOK_", "DATABASE_URL"))
        }
        env.update(
            SUPABASE_URL=self.config.public_url,
            SUPABASE_ANON_KEY=self.config.keys.anon_key,
            SUPABASE_SERVICE_ROLE_KEY=self.config.keys.service_role_key,
            SUPABASE_DB_URL=self.config.db_url,
            DENO_DIR=str(self.work_dir / "cache"),
            MESHHOOK_FUNCTION_PORT=str(port),
            MESHHOOK_FUNCTION_MAIN=main.resolve().as_uri(),
            NO_COLOR="1",
        )
        return env

    async def _start(self, name: str, main: Path) -> FunctionProcess:
        if self.deno is None:
            raise RuntimeError("Deno is not installed: npm i -g deno (or set MESHHOOK_METRICS_DENO)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = self.work_dir / "bootstrap.ts"
        if not bootstrap.exists() or bootstrap.read_text() != BOOTSTRAP:
            bootstrap.write_text(BOOTSTRAP)
        port = _free_port()
        argv = [
            self.deno,
            "run",
            "--allow-all",
            "--no-prompt",
            "--no-config",
            "--node-modules-dir=none",
            str(bootstrap),
        ]
        proc = subprocess.Popen(
            argv, cwd=self.work_dir, env=self._environment(port, main), stdin=subprocess.DEVNULL
        )
        process = FunctionProcess(name, port, proc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if not process.alive:
                raise RuntimeError(
                    f"edge function {name!r} exited with status {proc.returncode} while starting"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            log.info("edge function %s listening (pid %d)", name, proc.pid)
            return process
        proc.kill()
        raise RuntimeError(f"edge function {name!r} did not start within {START_TIMEOUT:.0f}s")

    async def _process(self, name: str, main: Path) -> FunctionProcess:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            process = self.processes.get(name)
            if process is None or not process.alive:
                process = await self._start(name, main)
                self.processes[name] = process
            return process

    async def handle(self, request: Request) -> Response:
        name = request.path_params["name"]
        rest = request.path_params.get("rest", "")
        main = self.functions_dir / name / "index.ts" if self.functions_dir and NAME.match(name) else None
        if main is None or not main.is_file():
            return JSONResponse({"code": "NOT_FOUND", "message": "Requested function was not found"}, 404)
        if self._verify_jwt(name):
            try:
                authenticate(request, self.config.keys)
            except AuthFailure:
                return JSONResponse({"code": 401, "message": "Invalid JWT"}, 401)
        try:
            process = await self._process(name, main)
        except RuntimeError as exc:
            log.error("%s", exc)
            return JSONResponse(
                {"code": "BOOT_ERROR", "message": "Function failed to start (please check logs)"}, 503
            )
        url = f"http://127.0.0.1:{process.port}/{name}{'/' + rest if rest else ''}"
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS]
        try:
            upstream = await self.client.request(
                request.method,
                url,
                params=list(request.query_params.multi_items()),
                headers=headers,
                content=await request.body(),
            )
        except httpx.HTTPError as exc:
            log.error("edge function %s failed: %s", name, type(exc).__name__)
            return JSONResponse(
                {"code": "WORKER_ERROR", "message": "Function exited due to an error (please check logs)"},
                502,
            )
        out_headers = {
            k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS | {"content-encoding"}
        }
        return Response(upstream.content, status_code=upstream.status_code, headers=out_headers)
