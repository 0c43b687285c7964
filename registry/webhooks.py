"""Registry webhooks: events queued by the registry, delivered signed by a background worker.

:meth:`WebhookDispatcher.emit` never blocks and never raises into the registry operation that
emits: a full queue drops the event (logged). The worker POSTs ``{event, id, timestamp, data}``
signed with HMAC-SHA256 (:mod:`fedge.webhook_signature`), retries errors, 5xx and 429 with
exponential backoff up to ``max_attempts``, and records every delivery in ``webhook_deliveries``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import func
from sqlmodel import col, select

from fedge.config import WebhookConfig, validate_webhooks
from fedge.errors import RegistryError, RegistryUnavailableError
from fedge.webhook_signature import sign_payload
from registry.db import SqlStoreBase, session_scope
from registry.tables import WebhookDeliveryRow

__all__ = ["EventSink", "WebhookDelivery", "WebhookDeliveryStore", "WebhookDispatcher", "public_url"]

log = logging.getLogger(__name__)

# What the registry calls with an event name and its data (JSON-able).
EventSink = Callable[[str, Mapping[str, Any]], None]

QUEUE_SIZE = 1000
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


def public_url(url: str) -> str:
    """``url`` without credentials, query or fragment: what the log and the API may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class WebhookDelivery:
    """One event's delivery to one receiver, as the API shows it."""

    id: str
    event: str
    url: str
    status: str
    attempts: int
    status_code: int | None
    last_error: str
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {
            "id": self.id,
            "event": self.event,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "status_code": self.status_code,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _entity(row: WebhookDeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        row.id,
        row.event,
        row.url,
        row.status,
        row.attempts,
        row.status_code,
        row.last_error,
        row.created_at,
        row.updated_at,
    )


class WebhookDeliveryStore(SqlStoreBase):
    """The delivery log (the registry's ``webhook_deliveries`` table)."""

    def _session(self) -> Any:
        return session_scope(
            self.engine,
            unavailable=RegistryUnavailableError,
            failed=RegistryError,
            what="webhook delivery log",
        )

    def record(
        self,
        delivery_id: str,
        *,
        event: str,
        url: str,
        status: str,
        attempts: int,
        status_code: int | None = None,
        last_error: str = "",
    ) -> None:
        """Create or update delivery ``delivery_id``."""
        now = datetime.now(UTC)
        with self._session() as session:
            row = session.get(WebhookDeliveryRow, delivery_id)
            if row is None:
                row = WebhookDeliveryRow(id=delivery_id, event=event, url=url, status=status, created_at=now)
            row.status, row.attempts, row.status_code = status, attempts, status_code
            row.last_error, row.updated_at = last_error[:2000], now
            session.add(row)

    def get(self, delivery_id: str) -> WebhookDelivery | None:
        """One delivery, or None."""
        with self._session() as session:
            row = session.get(WebhookDeliveryRow, delivery_id)
            return None if row is None else _entity(row)

    def list(
        self, *, limit: int = 50, offset: int = 0, event: str | None = None
    ) -> tuple[list[WebhookDelivery], int]:
        """The newest deliveries first (a page of them) and how many there are in all."""
        with self._session() as session:
            query = select(WebhookDeliveryRow)
            count = select(func.count()).select_from(WebhookDeliveryRow)
            if event:
                query = query.where(WebhookDeliveryRow.event == event)
                count = count.where(WebhookDeliveryRow.event == event)
            rows = session.exec(
                query.order_by(col(WebhookDeliveryRow.created_at).desc(), col(WebhookDeliveryRow.id))
                .offset(offset)
                .limit(limit)
            ).all()
            total = session.exec(count).one()
            return [_entity(r) for r in rows], int(total)


def _jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become null, unknown objects their text."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass(frozen=True)
class _Job:
    hook: WebhookConfig
    event: str
    delivery_id: str
    body: bytes


class WebhookDispatcher:
    """Queue the registry's events and deliver them to the configured webhooks from one thread.

    Parameters
    ----------
    webhooks : sequence of WebhookConfig
        The receivers (validated here: a bad one raises ``ConfigError`` before anything starts).
    store : WebhookDeliveryStore
        Where each delivery and its attempts are recorded.
    backoff_base_s : float
        The first retry's delay; each next one doubles, up to ``BACKOFF_MAX_S``.
    """

    def __init__(
        self,
        webhooks: Sequence[WebhookConfig],
        store: WebhookDeliveryStore,
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        validate_webhooks(list(webhooks))
        self.webhooks = list(webhooks)
        self.store = store
        self.backoff_base_s = backoff_base_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._client = httpx.Client(follow_redirects=False, trust_env=False)
        self._thread = threading.Thread(target=self._run, name="fedge-webhooks", daemon=True)
        self._thread.start()

    def emit(self, event: str, data: Mapping[str, Any]) -> None:
        """Queue ``event`` for every webhook subscribed to it; never blocks, never raises."""
        try:
            now = int(time.time())
            for hook in self.webhooks:
                if hook.events and event not in hook.events:
                    continue
                delivery_id = str(uuid.uuid4())
                payload = {"event": event, "id": delivery_id, "timestamp": now, "data": _jsonable(data)}
                body = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
                try:
                    self._queue.put_nowait(_Job(hook, event, delivery_id, body))
                except queue.Full:
                    log.warning("webhook queue full: %s to %s dropped", event, public_url(hook.url))
        except Exception:  # an event must never fail the operation that emitted it
            log.exception("could not queue webhook event %s", event)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery finished (delivered or given up); True if it did."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 5.0) -> None:
        """Give queued deliveries up to ``timeout`` seconds, then stop the worker (what is left stays
        undelivered, its row ``pending``)."""
        self.drain(timeout)
        self._stop.set()
        with contextlib.suppress(queue.Full):  # the worker sees _stop after its current job anyway
            self._queue.put_nowait(None)
        self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._queue.get()
            try:
                if job is not None:
                    self._deliver(job)
            except Exception:
                log.exception("webhook delivery failed unexpectedly")
            finally:
                self._queue.task_done()

    def _deliver(self, job: _Job) -> None:
        hook, url = job.hook, public_url(job.hook.url)
        secret = os.environ.get(hook.secret_env, "")
        self.store.record(job.delivery_id, event=job.event, url=url, status="pending", attempts=0)
        if not secret:
            self.store.record(
                job.delivery_id,
                event=job.event,
                url=url,
                status="failed",
                attempts=0,
                last_error=f"environment variable {hook.secret_env} holding the secret is not set",
            )
            log.warning("webhook to %s not sent: %s is not set", url, hook.secret_env)
            return
        code: int | None = None
        error = ""
        for attempt in range(1, hook.max_attempts + 1):
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "fedge-webhooks",
                "X-Fedge-Event": job.event,
                "X-Fedge-Delivery": job.delivery_id,
                "X-Fedge-Timestamp": str(timestamp),
                "X-Fedge-Signature": sign_payload(secret, timestamp, job.body),
            }
            retry = True
            try:
                response = self._client.post(
                    hook.url, content=job.body, headers=headers, timeout=hook.timeout_s
                )
                code, error = response.status_code, ""
                if 200 <= code < 300:
                    self.store.record(
                        job.delivery_id,
                        event=job.event,
                        url=url,
                        status="delivered",
                        attempts=attempt,
                        status_code=code,
                    )
                    return
                error = f"receiver answered HTTP {code}"
                retry = code >= 500 or code == 429
            except httpx.HTTPError as exc:
                code, error = None, f"{type(exc).__name__}: {exc}"[:500]
            done = not retry or attempt == hook.max_attempts
            self.store.record(
                job.delivery_id,
                event=job.event,
                url=url,
                status="failed" if done else "pending",
                attempts=attempt,
                status_code=code,
                last_error=error,
            )
            if done:
                log.warning("webhook %s to %s failed after %d attempt(s): %s", job.event, url, attempt, error)
                return
            delay = min(BACKOFF_MAX_S, self.backoff_base_s * 2 ** (attempt - 1))
            if self._stop.wait(delay):
                return
