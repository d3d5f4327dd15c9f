"""The dashboard's web app and JSON API (Starlette).

Every route needs a signed-in user: ``Authorization: Bearer TOKEN`` (API tokens from
``safesignal dashboard user add``), or the session cookie a browser gets at /login.  Without
either the answer is 401.  Forms carry the session's CSRF token; an API POST made with the
cookie (the pages' own JavaScript) carries it in ``X-CSRF-Token``.  Only installers and admins
confirm devices and post provisioning records (403 for a viewer).

API (JSON):
  GET  /api/devices                               list of devices (registry.list_devices)
  POST /api/devices/{tenant}/{device_id}/confirm  {"installer": NAME} -> 200, or 409 {"error", "reason"}
  GET  /api/alerts?since=ISO                      alerts received at or after ``since``, oldest first
  GET  /api/events                                Server-Sent Events: ``event: alert`` per new alert
  POST /api/provisionings                         a provisioning record -> 201
  GET  /api/me                                    who the credentials belong to

Pages (a browser session; a token alone gets the sign-in form):
  /          tenant -> building -> room -> device: presence and since when, last alert, last test alert,
             firmware, certificate expiry, anomalies, the confirmation or (installers, admins) the
             confirm form; kept current from the live stream by static/devices.js
  /feed      the live PANIC feed a front desk leaves open (static/feed.js: the live stream read with
             the session cookie; each new panic on top at once, with a flash and a Web Audio beep)
  /login, /logout, POST /devices/{tenant}/{device_id}/confirm (the confirm form)
Templates in ``templates/``, files in ``static/`` (plain JavaScript, no build step; the CSP allows
scripts and styles from 'self' only, so nothing is inline).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from safesignal.dashboard import auth, registry
from safesignal.dashboard.auth import Principal
from safesignal.dashboard.db import CONFIRMING_ROLES, AlertRow
from safesignal.errors import UsageError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "ssd_session"
LOGIN_COOKIE = "ssd_login"  # the login form's CSRF value (double submit: cookie and field must match)
POLL = 0.5  # seconds: the live stream looks for alerts other instances stored this often
WINDOW = 5.0  # seconds: how long the live stream keeps looking below its cursor (commits land out of id order)
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet stream
RECHECK = 5.0  # seconds: how often an open live stream checks that its session or token is still valid
MAX_BODY = 64 * 1024
FEED_HOURS = 12  # the feed page opens with the panics of this many hours (at most FEED_ITEMS)
FEED_ITEMS = 50
CERT_SOON = dt.timedelta(days=30)  # the device list marks a certificate expiring within this


def when(iso_text: str | None) -> str:
    """An ISO time as the pages show it without JavaScript (UTC; static/common.js shows local time)."""
    if not iso_text:
        return ""
    try:
        t = registry.parse_time(iso_text, "time")
    except UsageError:
        return iso_text
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def cert_state(expires: str | None, now: dt.datetime) -> str:
    """'expired', 'soon' or '' for a certificate's not-after time as the device reports it."""
    if not expires:
        return ""
    try:
        t = registry.parse_time(expires.replace("Z", "+00:00"), "cert_expires")
    except UsageError:
        return ""
    return "expired" if t <= now else "soon" if t - now <= CERT_SOON else ""


def ready_to_confirm(d: dict[str, Any]) -> bool:
    """A test alert has arrived since the device's latest provisioning (registry.confirm decides)."""
    if not d["provisioned_at"] or not d["last_test_alert"]:
        return False
    return registry.parse_time(d["last_test_alert"], "t") >= registry.parse_time(d["provisioned_at"], "t")


class Notifier:
    """Wakes the live streams when this instance stored an alert (called from the ingest's
    thread); alerts stored by other instances are found by polling."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
            self._event = asyncio.Event()

    def wake(self, *_: object) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        ev = self._event
        if ev is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="safesignal"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def create_app(db: sessionmaker[Session], *, writes: sessionmaker[Session] | None = None,
               notifier: Notifier | None = None, stopping: Callable[[], bool] = lambda: False) -> _SecurityHeaders:
    """The ASGI app over the registry behind ``db`` (reading sessions) and ``writes`` (sessions for
    transactions that write: db.sessions(engine, write=True); default ``db``)."""
    writes = writes or db
    notifier = notifier or Notifier()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = when

    # --- who is asking --------------------------------------------------------------------
    def who(request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        with db() as s:
            if scheme.lower() == "bearer" and token.strip():
                return auth.by_token(s, token.strip())
            if header:
                return None
            cookie = request.cookies.get(COOKIE)
            return auth.by_session(s, cookie) if cookie else None

    def api_user(request: Request, *, confirming: bool = False) -> Principal | Response:
        p = who(request)
        if p is None:
            return _error(401, "sign in: Authorization: Bearer TOKEN (safesignal dashboard user add) or a session")
        if request.method == "POST" and p.csrf_token is not None and \
                not auth.csrf_ok(p, request.headers.get("x-csrf-token")):
            return _error(403, "missing or wrong X-CSRF-Token for a session-authenticated request")
        if confirming and p.role not in CONFIRMING_ROLES:
            return _error(403, f"role {p.role} may not do this: installers and admins only")
        return p

    async def json_body(request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, "request body too large")
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeError):
            return _error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        return body

    # --- API ----------------------------------------------------------------------------------
    def api_devices(request: Request) -> Response:
        p = api_user(request)
        if isinstance(p, Response):
            return p
        with db() as s:
            return JSONResponse(registry.list_devices(s))

    async def api_confirm(request: Request) -> Response:
        p = await run_in_threadpool(api_user, request, confirming=True)
        if isinstance(p, Response):
            return p
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        installer = body.get("installer")
        if not isinstance(installer, str) or not installer.strip() or len(installer) > 64:
            return _error(400, "installer: the confirming installer's name (1-64 characters)")
        return await run_in_threadpool(_confirm, request.path_params["tenant"], request.path_params["device_id"],
                                       installer.strip(), p)

    def _confirm(tenant: str, device_id: str, installer: str, p: Principal) -> Response:
        with writes() as s:
            try:
                return JSONResponse(registry.confirm(s, tenant, device_id, installer, p.user_id))
            except registry.NotFound as e:
                return _error(404, str(e))
            except registry.Conflict as e:
                return _error(409, "not confirmed", reason=str(e))

    def api_alerts(request: Request) -> Response:
        p = api_user(request)
        if isinstance(p, Response):
            return p
        since_text = request.query_params.get("since")
        try:
            since = registry.parse_time(since_text, "since") if since_text else None
        except UsageError as e:
            return _error(400, str(e))
        with db() as s:
            return JSONResponse([a.json() for a in registry.alerts_since(s, since)])

    async def api_provisionings(request: Request) -> Response:
        p = await run_in_threadpool(api_user, request, confirming=True)
        if isinstance(p, Response):
            return p
        body = await json_body(request)
        if isinstance(body, Response):
            return body

        def store() -> Response:
            with writes() as s:
                try:
                    rec = registry.record_provisioning(s, body, p.user_id, p.name)
                except UsageError as e:
                    return _error(400, str(e))
                return JSONResponse(registry.provisioning_json(rec), status_code=201)

        return await run_in_threadpool(store)

    def api_me(request: Request) -> Response:
        p = api_user(request)
        if isinstance(p, Response):
            return p
        return JSONResponse({"name": p.name, "role": p.role})

    async def api_events(request: Request) -> Response:
        p = await run_in_threadpool(api_user, request)
        if isinstance(p, Response):
            return p
        last = request.headers.get("last-event-id") or request.query_params.get("after")
        start = int(last) if last is not None and last.isdigit() else None

        def top() -> int:
            with db() as s:
                return registry.max_alert_id(s)

        def after(floor: int, sent: set[int]) -> list[registry.StoredAlert]:
            with db() as s:
                return registry.alerts_after(s, floor, limit=5000, skip=sent)

        floor = start if start is not None else await run_in_threadpool(top)

        async def stream() -> AsyncIterator[str]:
            nonlocal floor
            sent: set[int] = set()
            marks: deque[tuple[float, int]] = deque()
            quiet_since = checked = time.monotonic()
            yield "retry: 1000\n: connected\n\n"
            while not stopping():
                if time.monotonic() - checked >= RECHECK:
                    # signed out (or the account's session expired): end the stream; the
                    # browser's reconnect then gets 401
                    if await run_in_threadpool(who, request) is None:
                        return
                    checked = time.monotonic()
                rows = await run_in_threadpool(after, floor, set(sent))
                now = time.monotonic()
                for a in rows:
                    if a.id not in sent:
                        sent.add(a.id)
                        quiet_since = now
                        yield f"id: {a.id}\nevent: alert\ndata: {json.dumps(a.json())}\n\n"
                # An alert with a lower id may still commit (another instance's transaction):
                # keep looking WINDOW seconds below the newest id sent.
                marks.append((now, max([floor, *sent])))
                while marks and now - marks[0][0] >= WINDOW:
                    floor = max(floor, marks.popleft()[1])
                sent = {i for i in sent if i > floor}
                if now - quiet_since >= KEEPALIVE:
                    quiet_since = now
                    yield ": keep-alive\n\n"
                await notifier.wait(POLL)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- pages --------------------------------------------------------------------------------
    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def login_form(request: Request, message: str = "", status: int = 401) -> Response:
        token = secrets.token_urlsafe(32)
        resp = page(request, "login.html", {"csrf": token, "message": message}, status)
        resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/login")
        return resp

    def index(request: Request) -> Response:
        p = who(request)
        if p is None or p.csrf_token is None:  # pages are for browsers: a session, not a token
            return login_form(request)
        with db() as s:
            devices = registry.list_devices(s)
            top = registry.max_alert_id(s)
        now = dt.datetime.now(dt.UTC)
        tree: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
        for d in devices:
            d = {**d, "ready": ready_to_confirm(d), "cert_state": cert_state(d["cert_expires"], now)}
            tree.setdefault(d["tenant"], {}).setdefault(d["building"], {}).setdefault(d["room"], []).append(d)
        return page(request, "devices.html", {"user": p, "tree": tree, "csrf": p.csrf_token, "page": "devices",
                                              "top": top, "can_confirm": p.role in CONFIRMING_ROLES,
                                              "message": request.query_params.get("message", "")[:300]})

    def feed(request: Request) -> Response:
        p = who(request)
        if p is None or p.csrf_token is None:
            return login_form(request)
        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=FEED_HOURS)
        with db() as s:
            top = registry.max_alert_id(s)  # the stream starts after it: nothing between page and stream is lost
            rows = s.scalars(select(AlertRow).where(AlertRow.type == "panic", AlertRow.received_at >= since,
                                                    AlertRow.id <= top)
                             .order_by(AlertRow.id.desc()).limit(FEED_ITEMS))
            alerts = [registry.StoredAlert.of(r).json() for r in rows]
        return page(request, "feed.html", {"user": p, "csrf": p.csrf_token, "page": "feed", "top": top,
                                           "alerts": alerts, "hours": FEED_HOURS})

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return login_form(request, status=200)
        form = await request.form()
        given = form.get("csrf")
        expected = request.cookies.get(LOGIN_COOKIE)
        if not isinstance(given, str) or not expected or not secrets.compare_digest(given, expected):
            return login_form(request, "The form expired: sign in again.", 403)
        name, password = form.get("name"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return login_form(request, "Name and password, please.", 400)

        def check() -> str | None:
            with db() as s:  # the slow hash outside the write lock
                user = auth.check_password(s, name, password)
            if user is None:
                return None
            with writes() as s:
                return auth.open_session(s, user, password)

        cookie = await run_in_threadpool(check)
        if cookie is None:
            return login_form(request, "Wrong name or password.", 401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        max_age=int(auth.SESSION_LIFETIME.total_seconds()))
        resp.delete_cookie(LOGIN_COOKIE, path="/login")
        return resp

    async def signed_form(request: Request) -> tuple[Principal, Any] | Response:
        """A page's POST: the signed-in user and the form, once its CSRF token checks out; else
        the response to send (the login page, or 403)."""
        p = await run_in_threadpool(who, request)
        if p is None or p.csrf_token is None:
            return login_form(request)
        form = await request.form()
        csrf = form.get("csrf")
        if not auth.csrf_ok(p, csrf if isinstance(csrf, str) else None):
            return _error(403, "missing or wrong CSRF token")
        return p, form

    async def logout(request: Request) -> Response:
        got = await signed_form(request)
        if isinstance(got, Response):
            return got
        cookie = request.cookies.get(COOKIE, "")

        def close() -> None:
            with writes() as s:
                auth.close_session(s, cookie)

        await run_in_threadpool(close)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    async def confirm_form(request: Request) -> Response:
        got = await signed_form(request)
        if isinstance(got, Response):
            return got
        p, form = got
        if p.role not in CONFIRMING_ROLES:
            return _error(403, f"role {p.role} may not confirm: installers and admins only")
        installer = form.get("installer")
        name = installer.strip() if isinstance(installer, str) and installer.strip() else p.name
        resp = await run_in_threadpool(_confirm, request.path_params["tenant"], request.path_params["device_id"],
                                       name[:64], p)
        if resp.status_code == 200:
            message = f"{request.path_params['device_id']} confirmed by {name[:64]}"
        else:
            message = json.loads(bytes(resp.body)).get("reason") or json.loads(bytes(resp.body))["error"]
        return RedirectResponse("/?message=" + quote(message), status_code=303)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        yield

    app = Starlette(routes=[
        Route("/", index),
        Route("/feed", feed),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/devices/{tenant}/{device_id}/confirm", confirm_form, methods=["POST"]),
        Route("/api/me", api_me),
        Route("/api/devices", api_devices),
        Route("/api/devices/{tenant}/{device_id}/confirm", api_confirm, methods=["POST"]),
        Route("/api/alerts", api_alerts),
        Route("/api/events", api_events),
        Route("/api/provisionings", api_provisionings, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ], lifespan=lifespan)

    return _SecurityHeaders(app)


class _SecurityHeaders:
    """Adds the same security headers to every response (plain ASGI, so streams pass untouched)."""

    HEADERS = [(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
               (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
               (b"referrer-policy", b"same-origin")]

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
