"""The dashboard's routes and guards.

    from capture_daemon.ui.app import create_app
    app = create_app(runs_dir=Path("runs"))          # serve with uvicorn on 127.0.0.1

Guards, in the order a request meets them:
- Host: on a loopback address only `127.0.0.1`, `localhost` and `[::1]` are answered, so a web
  page cannot reach the dashboard by pointing its own domain name at 127.0.0.1 (DNS rebinding).
- Token: off loopback every request needs the token, as `?token=` once (it becomes a cookie,
  HttpOnly, SameSite=Strict), a cookie, or `Authorization: Bearer`.
- CSRF: every POST needs the `X-CSRF-Token` header holding this server's random token, which
  only the page itself can read (from its own HTML), and a JSON body; an `Origin` from another
  site is refused. A cross-site form or fetch can send neither.
- Every response forbids inline scripts and framing (Content-Security-Policy), so even a
  mistake in the page could not run text from a trace.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from capture_daemon.config import ConfigError
from capture_daemon.status import collect_status, _target_accepted
from capture_daemon.store import TraceStore
from capture_daemon.ui import api

STATIC = Path(__file__).parent / "static"
COOKIE = "understudy_ui"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
POLL_SECONDS = 0.5


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: Host check, token, CSRF on POST, security headers on every response."""

    def __init__(self, app, *, token: str | None, csrf: str, loopback: bool):
        self.app, self.token, self.csrf, self.loopback = app, token, csrf, loopback

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        refusal = self._refuse(request)
        if isinstance(refusal, Response):
            return await refusal(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
            await send(message)

        await self.app(scope, receive, with_headers)

    def _refuse(self, request: Request) -> Response | None:
        raw = request.headers.get("host") or ""
        host = raw[1:raw.index("]")] if raw.startswith("[") and "]" in raw else raw.rsplit(":", 1)[0]
        if self.loopback and not is_loopback(host):
            return JSONResponse({"error": "unknown Host; open the dashboard at http://127.0.0.1"}, status_code=421)
        if self.token:
            given = request.query_params.get("token") or request.cookies.get(COOKIE) or \
                request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not given or not hmac.compare_digest(given, self.token):
                return JSONResponse({"error": "this dashboard needs its token: open the URL `capture-daemon ui` printed"},
                                    status_code=401)
            if request.query_params.get("token") and request.method == "GET":
                response = RedirectResponse(request.url.path, status_code=303)
                response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                return response
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
                return JSONResponse({"error": "cross-site request refused"}, status_code=403)
            if not hmac.compare_digest(request.headers.get("x-csrf-token", ""), self.csrf):
                return JSONResponse({"error": "missing or wrong X-CSRF-Token"}, status_code=403)
            if not request.headers.get("content-type", "").startswith("application/json"):
                return JSONResponse({"error": "expected a JSON body"}, status_code=415)
        return None


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def create_app(store_path: Path | None = None, runs_dir: Path = Path("runs"), *, token: str | None = None,
               loopback: bool = True) -> Any:
    """The dashboard as an ASGI app. `token` None on loopback: no token asked."""
    runs_dir = Path(runs_dir)
    csrf = secrets.token_urlsafe(32)
    page = (STATIC / "index.html").read_text().replace("{{csrf}}", csrf)

    def store() -> TraceStore:
        return TraceStore.connect(store_path)

    async def in_thread(fn, *args):
        return await asyncio.to_thread(fn, *args)

    def with_store(fn, *args):
        s = store()
        try:
            return fn(s, *args)
        finally:
            s.close()

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()} or name == "index.html":
            return _json({"error": "not found"}, 404)
        return FileResponse(path)

    async def status(request: Request) -> Response:
        return _json(await in_thread(collect_status))

    async def traces(request: Request) -> Response:
        try:
            return _json(await in_thread(with_store, api.list_traces, dict(request.query_params)))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)

    async def trace(request: Request) -> Response:
        found = await in_thread(with_store, api.trace_detail, request.path_params["trace_id"])
        return _json(found) if found else _json({"error": "no such trace"}, 404)

    async def readiness(request: Request) -> Response:
        return _json(await in_thread(with_store, api.readiness, _target_accepted()))

    async def curate(request: Request) -> Response:
        """{"ids": [...]} or {"filter": {...}}, and "action": accept | reject | clear | forget."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _json({"error": "not JSON"}, 400)
        action = body.get("action") if isinstance(body, dict) else None
        if action not in ("accept", "reject", "clear", "forget"):
            return _json({"error": "action must be accept, reject, clear or forget"}, 400)

        def run(s: TraceStore) -> int:
            if isinstance(body.get("filter"), dict):
                ids = [t.trace_id for t in api.matching(s, {k: str(v) for k, v in body["filter"].items()})]
            else:
                ids = [str(i) for i in body.get("ids") or []]
            if action == "forget":
                return sum(s.delete_trace(i) for i in ids)
            return s.set_human_verdict(ids, {"accept": True, "reject": False, "clear": None}[action])

        try:
            changed = await in_thread(with_store, run)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        except ConfigError as exc:  # "clear" judges the traces by config.toml's rules again
            return _json({"error": f"{exc.message}: fix config.toml, then try again"}, 409)
        return _json({"changed": changed})

    async def events(request: Request) -> Response:
        """Server-sent events: each trace as it is committed (or committed again)."""
        async def stream():
            try:  # a reconnecting EventSource says where it stopped: nothing committed meanwhile is missed
                last = float(request.headers["last-event-id"])
            except (KeyError, ValueError):
                last = await in_thread(with_store, api.latest_stored)
            yield b"retry: 2000\n\n"
            quiet = 0.0
            while not await request.is_disconnected():
                found, last = await in_thread(with_store, api.new_since, last)
                for item in found:
                    yield f"id: {item['stored_at']!r}\nevent: trace\ndata: ".encode() + orjson.dumps(item) + b"\n\n"
                quiet = 0.0 if found else quiet + POLL_SECONDS
                if quiet >= 15:
                    yield b": keep-alive\n\n"
                    quiet = 0.0
                await asyncio.sleep(POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def runs(request: Request) -> Response:
        return _json({"runs_dir": str(runs_dir.resolve()), "runs": await in_thread(api.list_runs, runs_dir)})

    async def run(request: Request) -> Response:
        found = await in_thread(api.run_detail, runs_dir, request.path_params["name"])
        return _json(found) if found else _json({"error": "no such run"}, 404)

    async def run_file(request: Request) -> Response:
        path = api.run_file(runs_dir, request.path_params["name"], request.path_params["path"])
        return FileResponse(path, media_type="image/png") if path else _json({"error": "not found"}, 404)

    routes = [
        Route("/", index), Route("/static/{name}", static), Route("/api/status", status),
        Route("/api/traces", traces), Route("/api/traces/{trace_id}", trace), Route("/api/readiness", readiness),
        Route("/api/curate", curate, methods=["POST"]), Route("/api/events", events),
        Route("/api/runs", runs), Route("/api/runs/{name}", run), Route("/runs/{name}/{path:path}", run_file),
    ]
    return Guard(Starlette(routes=routes), token=token, csrf=csrf, loopback=loopback)


def serve(host: str, port: int, store_path: Path | None, runs_dir: Path, token: str | None) -> None:
    import uvicorn

    loopback = is_loopback(host)
    if not loopback and not token:
        token = secrets.token_urlsafe(24)
    app = create_app(store_path, runs_dir, token=token, loopback=loopback)
    shown = f"[{host}]" if ":" in host else host
    print(f"understudy dashboard: http://{shown}:{port}/" + (f"?token={token}" if token else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
