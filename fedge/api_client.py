"""One client of fedge's HTTP APIs (httpx only, so an edge device can use it): errors and downloads.

Every fedge server answers a refusal with ``{"error": {"code": ..., "message": ...}}``; the
:class:`ApiClient` raises the :class:`~fedge.errors.FedgeError` subclass that code names (so a
refused config is a ``ConfigError``, exit code 2, on the caller's side too), translates network
failures with ``raise ... from exc``, and streams downloads through a sha256 and a size bound.
"""

from __future__ import annotations

import hashlib
import io
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fedge.errors import ArtifactError, ConfigError, FedgeError, error_for_code

if TYPE_CHECKING:
    import httpx

__all__ = ["DIGEST_HEADER", "ApiClient", "error_from_response"]

# The header in which fedge's servers announce the sha256 of a body they send.
DIGEST_HEADER = "X-Content-SHA256"
_CHUNK = 1 << 16


def _httpx() -> Any:
    """httpx, imported at the first request (~70 ms: a device serves its stored model before)."""
    import httpx

    return httpx


def error_from_response(response: httpx.Response) -> FedgeError:
    """The error a refused answer stands for: the envelope's class, or one naming the HTTP status.

    Parameters
    ----------
    response : httpx.Response
        An answer whose status is not a success (its body already read).
    """
    status = response.status_code
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text[:300]
        if status == 422:
            return ConfigError(f"the server rejected the request (HTTP 422): {text}")
        return FedgeError(f"HTTP {status}: {text}")
    return error_for_code(code, f"{message} (HTTP {status})")


class ApiClient:
    """A client of one fedge server (the coordinator's operator API, a registry, a serving endpoint).

    Parameters
    ----------
    base_url : str
        The server, optionally with a path prefix (``https://host:8080/api/v1``).
    token : str, optional
        A bearer token, sent on every request (and never written into an error message).
    ca : path, optional
        A CA certificate the server's TLS chains to (the system's trust store otherwise).
    timeout : float
        Seconds for connecting and for each read.
    transport : httpx.BaseTransport, optional
        The network seam: tests keep this client and fake only the transport.
    client : httpx.Client, optional
        An HTTP client to send through (tests pass FastAPI's ``TestClient``); not closed here.
    service : str
        How error messages name the server (``the coordinator``, ``the registry``).
    unreachable : type of FedgeError
        What a network failure raises (``RegistryUnavailableError`` for the registry's client).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        ca: str | Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        service: str = "the coordinator",
        unreachable: type[FedgeError] = FedgeError,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.service = service
        self._unreachable = unreachable
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owns_http = client is None
        self._client: httpx.Client | None = client
        self._client_lock = threading.Lock()
        if client is None:
            verify: bool | ssl.SSLContext = True
            if ca is not None:
                try:
                    verify = ssl.create_default_context(cafile=str(ca))
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(
                        f"CA certificate {ca} cannot be used ({type(exc).__name__}): pass the "
                        "federation's ca.crt (PEM) as --ca or FEDGE_CA"
                    ) from exc
            # Built at the first request: loading the system's CA store takes ~0.1 s, which a device
            # serving its stored model should not wait for at start (nor pay at all for http://).
            self._new_client = lambda: _httpx().Client(timeout=timeout, verify=verify, transport=transport)

    @property
    def _http(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._new_client()
                client = self._client
        return client

    # --- requests --------------------------------------------------------------------------------
    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request and return the answer, whatever its status (network errors raise).

        Raises
        ------
        FedgeError
            (the ``unreachable`` class) when the server cannot be reached or the transfer breaks.
        """
        try:
            return self._http.request(method, self._url(path), headers=self._headers, **kwargs)
        except _httpx().HTTPError as exc:
            raise self._unreachable_error(method, path, exc) from exc

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; a refusal raises the error its envelope names (:func:`error_from_response`)."""
        response = self.send(method, path, **kwargs)
        if not response.is_success:
            raise error_from_response(response)
        return response

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request and return its JSON body (``None`` for an empty one)."""
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """``GET path`` and return its JSON body."""
        return self.call("GET", path, params=params)

    def post_json(self, path: str, body: Any) -> Any:
        """``POST path`` with a JSON body and return the JSON answer."""
        return self.call("POST", path, json=body)

    # --- downloads -------------------------------------------------------------------------------
    def download(self, path: str, dest: str | Path, *, max_bytes: int, sha256: str | None = None) -> str:
        """Stream ``GET path`` into ``dest``, checked against a sha256; return the digest.

        The bytes go to ``dest.part`` and are moved to ``dest`` only once the digest matches: a
        cut, altered or oversized transfer leaves no file behind.

        Parameters
        ----------
        path : str
            The resource, relative to ``base_url``.
        dest : path
            The file to write.
        max_bytes : int
            Refuse (and remove) a body larger than this.
        sha256 : str, optional
            The digest expected; the server's ``X-Content-SHA256`` header otherwise.

        Raises
        ------
        ArtifactError
            ``reason="download_incomplete"`` on a digest mismatch, ``"too_large"`` past ``max_bytes``.
        """
        target = Path(dest)
        part = target.with_name(target.name + ".part")
        try:
            with part.open("wb") as sink:
                digest = self._receive(path, sink.write, max_bytes=max_bytes, sha256=sha256)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return digest

    def download_bytes(self, path: str, *, max_bytes: int, sha256: str | None = None) -> bytes:
        """The body of ``GET path``, checked like :meth:`download` (for bodies that fit in memory)."""
        buffer = io.BytesIO()
        self._receive(path, buffer.write, max_bytes=max_bytes, sha256=sha256)
        return buffer.getvalue()

    def _receive(
        self, path: str, write: Callable[[bytes], object], *, max_bytes: int, sha256: str | None
    ) -> str:
        url = self._display(path)
        hasher, size = hashlib.sha256(), 0
        try:
            with self._http.stream("GET", self._url(path), headers=self._headers) as response:
                if not response.is_success:
                    response.read()
                    raise error_from_response(response)
                expected = sha256 or response.headers.get(DIGEST_HEADER, "")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(url, int(declared), max_bytes)
                for chunk in response.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(url, size, max_bytes)
                    hasher.update(chunk)
                    write(chunk)
        except _httpx().HTTPError as exc:
            raise self._unreachable_error("GET", path, exc) from exc
        actual = hasher.hexdigest()
        if actual != expected:
            raise ArtifactError(
                f"{url} sent {size} bytes with sha256 {actual[:12]}.. but {DIGEST_HEADER} "
                f"{expected[:12] or 'none'}..: the download was cut or altered in transit",
                reason="download_incomplete",
            )
        return actual

    # --- plumbing --------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base_url + path

    def _display(self, path: str) -> str:
        """The URL for messages: without credentials a user may have put in it."""
        url = _httpx().URL(self._url(path))
        return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)

    def _unreachable_error(self, method: str, path: str, exc: httpx.HTTPError) -> FedgeError:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return self._unreachable(
                f"{self.service} at {self._display('')} presents a TLS certificate this client does not "
                "trust: pass the federation's CA certificate with --ca (or set FEDGE_CA) to the ca.crt "
                "from `fedge certs init`"
            )
        return self._unreachable(
            f"cannot reach {self.service} at {self._display('')} ({method} {path}): "
            f"{type(exc).__name__}: {exc}; check the URL, the network and that the server is running"
        )

    def close(self) -> None:
        """Close the HTTP client (unless it was passed in)."""
        if self._owns_http and self._client is not None:
            self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _too_large(url: str, size: int, limit: int) -> ArtifactError:
    return ArtifactError(
        f"{url} sends {size} bytes or more, over the limit of {limit}: refusing the download "
        "(raise the limit if the artifact is expected to be this large)",
        reason="too_large",
    )
