"""The console's routes: sign-in, runs, registry, drift, fleet and audit pages, and their three actions.

Each page reads the same stores and domain functions the API routes use (``app.state``, set by
``create_app``) and enforces the same roles with ``coordinator.auth.require_role``. A page answers
HTML: a refusal renders an error page with the status the API would answer, never a 5xx for bad input.
State-changing POSTs need the session's CSRF token and a same-origin request (docs/console.md).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime.

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from coordinator.api.registry_schemas import bounded_version_ref
from coordinator.api.schemas import RunDetail
from coordinator.auth import Principal, TokenStore, require_role
from coordinator.ui.lineage_graph import lineage_svg
from coordinator.ui.sessions import COOKIE_NAME, ConsoleSession, SessionStore
from fedge.errors import (
    AuthenticationError,
    FedgeError,
    NotFoundError,
    PermissionDeniedError,
)
from registry import Registry, approve, check_gates, declared_aliases, promote, verify_chain

__all__ = ["CONSOLE_MARKER", "CONSOLE_PREFIX", "PAGE_SIZE", "mount_console", "router"]

CONSOLE_PREFIX = "/ui"
# Set by ConsoleScope on /ui requests only (stripped from every incoming request): tells the API's
# RequestGuard that the console authenticates this request itself (a session cookie, or sign-in).
CONSOLE_MARKER = "x-fedge-console-request"
PAGE_SIZE = 25
MAX_PAGE = 400  # PAGE_SIZE * MAX_PAGE rows at most are read for one page
MAX_FORM_FIELD = 1000

_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))
router = APIRouter(include_in_schema=False)

T = TypeVar("T")

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ConsoleScope:
    """ASGI middleware (outermost): mark /ui requests for the guard; strip the mark from all others."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != CONSOLE_MARKER.encode()]
            path = scope.get("path", "")
            if path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
                headers.append((CONSOLE_MARKER.encode(), b"1"))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def mount_console(app: FastAPI) -> None:
    """Serve the console on ``app`` at /ui (its sessions live in ``app.state.console_sessions``)."""
    app.state.console_sessions = SessionStore()
    app.mount(f"{CONSOLE_PREFIX}/static", StaticFiles(directory=str(_HERE / "static")), name="console-static")
    app.include_router(router, prefix=CONSOLE_PREFIX)
    app.add_middleware(ConsoleScope)


# --- the request's context ------------------------------------------------------------------------
class ConsoleError(Exception):
    """A refusal rendered as an HTML page (``status``, a title and the message)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def _sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


def _session(request: Request) -> ConsoleSession | None:
    return _sessions(request).get(request.cookies.get(COOKIE_NAME))


def _principal(request: Request, session: ConsoleSession | None) -> Principal | None:
    """The signed-in principal (its token authenticated again now), or None."""
    if session is None:
        return None
    tokens: TokenStore = request.app.state.tokens
    try:
        return tokens.authenticate(session.token)
    except AuthenticationError:
        _sessions(request).close(session.id)  # revoked since sign-in
        return None


def _rank(principal: Principal, role: str) -> bool:
    try:
        require_role(principal, role)
    except PermissionDeniedError:
        return False
    return True


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = _session(request)
    principal = context.pop("principal", None)
    response = templates.TemplateResponse(
        request,
        template,
        {
            "principal": principal,
            "csrf": session.csrf if session is not None and principal is not None else "",
            "can_operate": principal is not None and _rank(principal, "operator"),
            "prefix": CONSOLE_PREFIX,
            **context,
        },
        status_code=status,
    )
    response.headers.update(_SECURITY_HEADERS)
    return response


def _error_page(request: Request, principal: Principal | None, exc: ConsoleError) -> HTMLResponse:
    return _page(
        request, "error.html", status=exc.status, principal=principal, title=exc.title, message=exc.message
    )


def _fedge_error(exc: FedgeError) -> ConsoleError:
    status = exc.http_status if exc.http_status < 500 else 502
    titles = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Refused", 422: "Bad request"}
    return ConsoleError(status, titles.get(status, "Refused"), str(exc))


def _render(request: Request, role: str, build: Callable[[Principal], Response]) -> Response:
    """Authenticate, check ``role``, then build the page; a refusal is a page, never a 5xx."""
    principal = _principal(request, _session(request))
    if principal is None:
        return RedirectResponse(f"{CONSOLE_PREFIX}/signin", status_code=303)
    try:
        require_role(principal, role)
        return build(principal)
    except ConsoleError as exc:
        return _error_page(request, principal, exc)
    except FedgeError as exc:
        return _error_page(request, principal, _fedge_error(exc))


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise ConsoleError(400, "Bad request", f"page must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _text_param(request: Request, name: str, max_length: int = 256) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_length or not value.isprintable():
        raise ConsoleError(400, "Bad request", f"{name} must be at most {max_length} printable characters")
    return value


class Pager:
    """One page of a list read as ``fetch(offset, PAGE_SIZE + 1)`` (the extra row says a next page
    exists): page N reads its own rows, not the N - 1 pages before it."""

    def __init__(self, request: Request, page: int, fetch: Callable[[int, int], Sequence[T]]) -> None:
        rows = list(fetch((page - 1) * PAGE_SIZE, PAGE_SIZE + 1))
        self.page = page
        self.items: list[Any] = rows[:PAGE_SIZE]
        self.has_next = len(rows) > PAGE_SIZE
        params = {k: v for k, v in request.query_params.items() if k != "page"}
        self.prev_url = f"?{urlencode({**params, 'page': page - 1})}" if page > 1 else None
        self.next_url = f"?{urlencode({**params, 'page': page + 1})}" if self.has_next else None
        if page > 1 and not self.items:
            raise ConsoleError(404, "Not found", f"page {page} is past the end of this list")


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


# --- sign-in --------------------------------------------------------------------------------------
def _same_origin(request: Request) -> str | None:
    """Why a state-changing request is cross-site (None: it is not)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in {"same-origin", "none"}:
        return f"a {fetch_site} request"
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            return "a request from another origin"
    return None


async def _form(request: Request) -> dict[str, str]:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise ConsoleError(400, "Bad request", "the console's forms post application/x-www-form-urlencoded")
    try:  # urlencoded only (no multipart parser needed): the guard has bounded the body already
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConsoleError(400, "Bad request", "the form is not valid UTF-8 urlencoded text") from exc
    out: dict[str, str] = {}
    for key, value in pairs:
        if len(value) > MAX_FORM_FIELD or not value.isprintable():
            raise ConsoleError(400, "Bad request", f"form field {key[:32]!r} is not short printable text")
        out[key] = value
    return out


@router.get("")
def console_root() -> RedirectResponse:
    return RedirectResponse(f"{CONSOLE_PREFIX}/runs", status_code=303)


@router.get("/signin")
def signin_page(request: Request) -> Response:
    return _page(request, "signin.html", title="Sign in")


@router.post("/signin")
async def signin(request: Request) -> Response:
    try:
        why = _same_origin(request)
        if why is not None:
            raise ConsoleError(403, "Not allowed", f"sign-in refused: {why}")
        form = await _form(request)
        token = form.get("token", "").strip()
        tokens: TokenStore = request.app.state.tokens
        try:
            principal = tokens.authenticate(token)
            require_role(principal, "viewer")  # a device token has no console
        except (AuthenticationError, PermissionDeniedError) as exc:
            raise ConsoleError(
                401 if isinstance(exc, AuthenticationError) else 403, "Sign-in refused", str(exc)
            ) from exc
    except ConsoleError as exc:
        return _page(request, "signin.html", status=exc.status, title="Sign in", message=exc.message)
    session = _sessions(request).open(token)
    response = RedirectResponse(f"{CONSOLE_PREFIX}/runs", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        session.id,
        httponly=True,
        samesite="strict",
        path=CONSOLE_PREFIX,
        secure=request.url.scheme == "https",
        max_age=8 * 3600,
    )
    return response


async def _action(
    request: Request,
    role: str,
    act: Callable[[Principal, dict[str, str]], Response],
    on_refusal: Callable[[Principal, ConsoleError], Response] | None = None,
) -> Response:
    """A state-changing POST: session, same origin, CSRF token, role; then ``act``."""
    session = _session(request)
    principal = _principal(request, session)
    try:
        if principal is None or session is None:
            raise ConsoleError(
                401, "Signed out", "sign in again: this session is unknown, expired or revoked"
            )
        why = _same_origin(request)
        if why is not None:
            raise ConsoleError(403, "Not allowed", f"refused: {why} (the console accepts its own forms only)")
        form = await _form(request)
        if not session.csrf_matches(form.get("csrf")):
            raise ConsoleError(
                403, "Not allowed", "refused: the form's CSRF token is missing or wrong (reload the page)"
            )
        try:
            require_role(principal, role)
            return act(principal, form)
        except FedgeError as exc:
            raise _fedge_error(exc) from exc
    except ConsoleError as exc:
        if on_refusal is not None and principal is not None and exc.status in {409, 422, 400}:
            return on_refusal(principal, exc)
        return _error_page(request, principal, exc)


@router.post("/signout")
async def signout(request: Request) -> Response:
    def act(_principal: Principal, _form: dict[str, str]) -> Response:
        _sessions(request).close(request.cookies.get(COOKIE_NAME))
        response = RedirectResponse(f"{CONSOLE_PREFIX}/signin", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=CONSOLE_PREFIX)
        return response

    return await _action(request, "viewer", act)


# --- runs -----------------------------------------------------------------------------------------
@router.get("/runs")
def runs_page(request: Request) -> Response:
    def build(principal: Principal) -> Response:
        registry = _registry(request)
        status = _text_param(request, "status", 32)
        pager = Pager(
            request,
            _page_number(request),
            lambda offset, limit: (
                registry.store.list_runs(limit=limit, offset=offset)
                if status is None
                else [r for r in registry.store.list_runs(limit=offset + limit * 20) if r.status == status][
                    offset : offset + limit
                ]
            ),
        )
        rows = [(r, len(registry.store.list_checkpoints(r.run_id))) for r in pager.items]
        return _page(request, "runs.html", principal=principal, title="Runs", pager=pager, rows=rows)

    return _render(request, "viewer", build)


def _run_id(run_id: str) -> str:
    if not 1 <= len(run_id) <= 128:
        raise ConsoleError(404, "Not found", "no such run")
    return run_id


def _run_logs(request: Request, run_id: str) -> tuple[str | None, str]:
    """The run's log tail (when this coordinator manages a deployment), and why not otherwise."""
    deployment = request.app.state.deployment
    if deployment is None or not getattr(deployment, "started", False):
        return None, "this coordinator manages no running SuperLink: logs are in the simulation's output"
    try:
        page = deployment.runs.logs(run_id, offset=0, limit=1 << 20)
    except FedgeError as exc:
        return None, str(exc)
    return page.text[-8000:], ""


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str) -> Response:
    def build(principal: Principal) -> Response:
        registry = _registry(request)
        detail = RunDetail.read(registry, registry.store.get_run(_run_id(run_id)))
        chart = {
            "rounds": [r.round for r in detail.rounds],
            "series": _round_series(detail),
        }
        log_text, log_note = _run_logs(request, detail.run_id)
        rejected = [
            {"round": c.round, **u}
            for c in registry.store.list_checkpoints(detail.run_id)
            for u in c.lineage.get("rejected_updates", []) or []
            if isinstance(u, dict)
        ]
        return _page(
            request,
            "run.html",
            principal=principal,
            title=f"Run {detail.run_id}",
            run=detail,
            chart_json=json.dumps(chart),
            points=len(detail.rounds),
            log_text=log_text,
            log_note=log_note,
            rejected=rejected,
            can_stop=detail.status in {"pending", "running", "starting"},
            flash=_flash(request),
        )

    return _render(request, "viewer", build)


def _round_series(detail: RunDetail) -> dict[str, list[float | None]]:
    """Per metric whose name says accuracy or loss: its value at each recorded round (None if absent)."""
    names = sorted({k for r in detail.rounds for k in r.metrics if "accuracy" in k or "loss" in k})
    series: dict[str, list[float | None]] = {}
    for name in names:
        values = [r.metrics.get(name) for r in detail.rounds]
        series[name] = [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]
    return series


_FLASHES = {
    "stopped": "Stop requested.",
    "approved": "Approval recorded.",
    "promoted": "Promoted: the alias now points at this version.",
}


def _flash(request: Request) -> str:
    return _FLASHES.get(request.query_params.get("done", ""), "")


@router.post("/runs/{run_id}/stop")
async def stop_run(request: Request, run_id: str) -> Response:
    def act(principal: Principal, _form: dict[str, str]) -> Response:
        deployment = request.app.state.deployment
        if deployment is None or not getattr(deployment, "started", False):
            raise ConsoleError(
                409, "Refused", "this coordinator manages no running SuperLink: nothing to stop"
            )
        deployment.runs.stop(_run_id(run_id), actor=principal.name)
        return RedirectResponse(f"{CONSOLE_PREFIX}/runs/{run_id}?done=stopped", status_code=303)

    return await _action(request, "operator", act)


# --- registry -------------------------------------------------------------------------------------
@router.get("/registry")
def registry_page(request: Request) -> Response:
    def build(principal: Principal) -> Response:
        registry = _registry(request)
        name = _text_param(request, "name")
        pager = Pager(
            request,
            _page_number(request),
            lambda offset, limit: registry.store.list_versions(name=name, limit=limit, offset=offset),
        )
        return _page(
            request, "registry.html", principal=principal, title="Registry", pager=pager, name=name or ""
        )

    return _render(request, "viewer", build)


def _version_context(request: Request, principal: Principal, ref: str) -> dict[str, Any]:
    registry = _registry(request)
    try:
        bounded_version_ref(ref)
    except ValueError as exc:
        raise ConsoleError(404, "Not found", str(exc)) from exc
    version = registry.resolve(ref)
    gates = request.app.state.gates
    aliases = declared_aliases(registry, request.app.state.aliases, gates)
    gate_rows = []
    for alias in aliases:
        gate = gates.aliases.get(alias)
        checks = (
            []
            if gate is None
            else check_gates(version, gate, registry.store.list_approvals(version.id, alias))
        )
        gate_rows.append({"alias": alias, "checks": checks, "lacks": [c for c in checks if not c.passed]})
    parent = None
    if version.parent_version_id is not None:
        try:
            parent = registry.store.get_version(version.parent_version_id)
        except NotFoundError:
            parent = None
    return {
        "principal": principal,
        "title": f"{version.name}:{version.number}",
        "version": version,
        "ref": f"{version.name}:{version.number}",
        "gate_rows": gate_rows,
        "approvals": registry.store.list_approvals(version.id),
        "lineage_svg": lineage_svg(version, parent),
        "privacy": version.lineage.get("privacy"),
        "flash": _flash(request),
    }


@router.get("/registry/versions/{ref}")
def version_page(request: Request, ref: str) -> Response:
    def build(principal: Principal) -> Response:
        return _page(request, "version.html", **_version_context(request, principal, ref))

    return _render(request, "viewer", build)


def _alias_field(form: dict[str, str]) -> str:
    alias = form.get("alias", "")
    if (
        not alias
        or len(alias) > 128
        or not all(c.isalnum() or c in "_.-" for c in alias)
        or not alias.isascii()
    ):
        raise ConsoleError(400, "Bad request", "alias must be 1 to 128 letters, digits, '_', '.' or '-'")
    return alias


def _version_refusal(request: Request, ref: str) -> Callable[[Principal, ConsoleError], Response]:
    def show(principal: Principal, exc: ConsoleError) -> Response:
        try:
            context = _version_context(request, principal, ref)
        except (ConsoleError, FedgeError):
            return _error_page(request, principal, exc)
        return _page(request, "version.html", status=exc.status, refusal=exc.message, **context)

    return show


@router.post("/registry/versions/{ref}/approve")
async def approve_version(request: Request, ref: str) -> Response:
    def act(principal: Principal, form: dict[str, str]) -> Response:
        registry = _registry(request)
        approval = approve(
            registry,
            ref=ref,
            alias=_alias_field(form),
            actor=principal.name,
            comment=form.get("comment", ""),
            aliases=request.app.state.aliases,
            gates=request.app.state.gates,
        )
        version = registry.store.get_version(approval.version_id)
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/registry/versions/{version.name}:{version.number}?done=approved",
            status_code=303,
        )

    return await _action(request, "operator", act, _version_refusal(request, ref))


@router.post("/registry/versions/{ref}/promote")
async def promote_version(request: Request, ref: str) -> Response:
    def act(principal: Principal, form: dict[str, str]) -> Response:
        reason = form.get("reason", "").strip() or "promoted from the console"
        (moved,) = promote(
            _registry(request),
            moves=[(ref, _alias_field(form))],
            actor=principal.name,
            reason=reason,
            gates=request.app.state.gates,
            aliases=request.app.state.aliases,
        )
        return RedirectResponse(
            f"{CONSOLE_PREFIX}/registry/versions/{moved.name}:{moved.number}?done=promoted", status_code=303
        )

    return await _action(request, "operator", act, _version_refusal(request, ref))


# --- drift ----------------------------------------------------------------------------------------
@router.get("/drift")
def drift_page(request: Request) -> Response:
    def build(principal: Principal) -> Response:
        service = request.app.state.drift
        model = _text_param(request, "model", 128)
        version_text = _text_param(request, "version", 20)
        if version_text is not None and not (version_text.isascii() and version_text.isdigit()):
            raise ConsoleError(400, "Bad request", "version must be a whole number")
        status = service.status(model)
        streams: list[dict[str, Any]] = status["versions"]
        pager = Pager(request, _page_number(request), lambda offset, limit: streams[offset : offset + limit])
        chosen = next((s for s in streams if version_text is None or s["version"] == int(version_text)), None)
        chart: dict[str, Any] = {"rounds": [], "series": {}}
        statistic = ""
        if chosen is not None:
            statistic = chosen["statistic"]
            reports = service.store.reports(
                chosen["model"],
                version=chosen["version"],
                source=chosen["source"],
                stream=chosen["stream"],
                limit=200,
            )
            top = [f["feature"] for f in chosen["top_features"]]
            chart["rounds"] = [r.window for r in reports]
            for feature in top:
                values = []
                for r in reports:
                    i = r.features.index(feature) if feature in r.features else -1
                    values.append(float(r.overall[statistic][i]) if i >= 0 else None)
                chart["series"][feature] = values
        triggers = service.store.triggers(model, limit=PAGE_SIZE)
        return _page(
            request,
            "drift.html",
            principal=principal,
            title="Drift",
            pager=pager,
            chosen=chosen,
            statistic=statistic,
            chart_json=json.dumps(chart),
            points=len(chart["rounds"]),
            triggers=triggers,
        )

    return _render(request, "viewer", build)


# --- fleet ----------------------------------------------------------------------------------------
@router.get("/fleet")
def fleet_page(request: Request) -> Response:
    def build(principal: Principal) -> Response:
        devices = request.app.state.device_reports.latest_by_device()
        pager = Pager(request, _page_number(request), lambda offset, limit: devices[offset : offset + limit])
        nodes, nodes_note = None, "no deployment is attached (served without --tls-dir): no nodes to show"
        deployment = request.app.state.deployment
        if deployment is not None:
            try:
                nodes, nodes_note = deployment.nodes.list(), ""
            except FedgeError as exc:
                nodes, nodes_note = None, str(exc)
        return _page(
            request,
            "fleet.html",
            principal=principal,
            title="Fleet",
            pager=pager,
            nodes=nodes,
            nodes_note=nodes_note,
        )

    return _render(request, "viewer", build)


# --- audit ----------------------------------------------------------------------------------------
@router.get("/audit")
def audit_page(request: Request) -> Response:
    def build(principal: Principal) -> Response:
        registry = _registry(request)
        action = _text_param(request, "action", 64)
        page = _page_number(request)
        seq, head = registry.store.audit_head()
        # The walk reads the whole log: done once per head (a new entry moves the head).
        cached = getattr(request.app.state, "console_audit_verified", None)
        if cached is not None and cached[0] == (seq, head):
            verification = cached[1]
        else:
            verification = verify_chain(registry.store.list_audit(), head_seq=seq, head_hash=head)
            request.app.state.console_audit_verified = ((seq, head), verification)
        # Newest first: read the tail of the (filtered) log; unfiltered, only the page's tail.
        after = 0 if action is not None else max(0, seq - page * PAGE_SIZE - 1)
        entries = registry.store.list_audit(action=action, after_seq=after)
        entries.reverse()
        pager = Pager(request, page, lambda offset, limit: entries[offset : offset + limit])
        return _page(
            request,
            "audit.html",
            principal=principal,
            title="Audit log",
            pager=pager,
            action=action or "",
            verification=verification,
        )

    return _render(request, "operator", build)  # the API's audit routes need an operator


@router.get("/{rest:path}")
def unknown_page(request: Request, rest: str) -> Response:
    def build(_principal: Principal) -> Response:
        raise ConsoleError(404, "Not found", "no such console page")

    return _render(request, "viewer", build)
