"""The Starlette application of ``pyfacematch serve``.

Starlette (not FastAPI): the service needs routing, streaming bodies and a lifespan, not
pydantic models; bodies are validated here with the library's own checks
(:mod:`pyfacematch.serve.bodies` calls :func:`~pyfacematch.gallery.validation.as_templates`),
so the same rules and the same typed errors apply in-process and over HTTP.

Endpoints (``{name}`` is a served gallery):

====================================================  =========  ===========================
``POST /v1/galleries/{name}/identify``                identify   1:N, several probes
``POST /v1/galleries/{name}/verify``                  verify     1:1
``POST /v1/galleries/{name}/enroll``                  enroll
``DELETE /v1/galleries/{name}/identities/{id}``       remove     opt-out
``POST /v1/galleries/{name}/identities/{id}/consent``  enroll     grant consent for a purpose
``DELETE …/identities/{id}/consent[?purpose=p]``       remove     withdraw (all: opt-out)
``GET …/identities/{id}/consent``                     verify     consent records (or admin)
``GET /v1/galleries/{name}/info``                     any scope
``POST /v1/galleries/{name}/calibrate``               admin
``GET /healthz`` ``/readyz`` ``/metrics`` ``/openapi.json``   none
====================================================  =========  ===========================

The API key's id is the audit-trail actor of every request (searches, enrollments, removals,
consent changes).

Errors are RFC 9457 problem details (:mod:`.problems`). Logs carry the route template, status,
latency and key id, never a body, a template or an identity id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyfacematch.gallery import Decision, Gallery, IdentifyResult, VerifyResult
from pyfacematch.gallery.secret import FileKeyProvider
from pyfacematch.gallery.validation import check_duplicate_option, check_id, check_json
from pyfacematch.security.consent import ConsentRecord, check_purpose
from pyfacematch.serve.auth import SCOPES, KeyStore
from pyfacematch.serve.batching import Batcher
from pyfacematch.serve.bodies import (
    JSON_TYPE,
    decode_templates,
    dumps,
    media_type,
    opt_float,
    opt_int,
    parse_json,
)
from pyfacematch.serve.config import ServeConfig
from pyfacematch.serve.console import (
    CONSOLE_CSP,
    CONSOLE_CSS,
    CONSOLE_HEADER,
    CONSOLE_JS,
    COOKIE,
    RateWindow,
    login_page,
    render_page,
)
from pyfacematch.serve.photos import (
    FACE_POLICIES,
    MULTIPART,
    PhotoEmbedder,
    Upload,
    read_upload,
    to_templates,
)
from pyfacematch.serve.problems import HTTPProblem, problem_body

__all__ = ["OPENAPI", "build_app", "decision_json", "identify_json", "verify_json"]

log = logging.getLogger("pyfacematch.serve")
access_log = logging.getLogger("pyfacematch.serve.access")

PROBLEM_TYPE = "application/problem+json"
MAX_K = 1000


# ------------------------------------------------------------------ JSON shapes
class JSONResponse(_StarletteJSONResponse):
    """Starlette's JSON response written by :func:`~pyfacematch.serve.bodies.dumps` (orjson)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def decision_json(d: Decision) -> dict[str, Any]:
    """A :class:`Decision` as JSON."""
    return {
        "accepted": d.accepted,
        "threshold": d.threshold,
        "source": d.source,
        "target": d.target,
    }


def identify_json(r: IdentifyResult) -> dict[str, Any]:
    """An :class:`IdentifyResult` as JSON (candidates best first)."""
    return {
        "candidates": [{"identity": c.identity, "score": _num(c.score)} for c in r.candidates],
        "decision": decision_json(r.decision),
        "identity": r.identity,
    }


def verify_json(r: VerifyResult) -> dict[str, Any]:
    """A :class:`VerifyResult` as JSON."""
    return {"identity": r.identity, "score": _num(r.score), "decision": decision_json(r.decision)}


# ------------------------------------------------------------------ metrics
class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pfm_requests",
            "HTTP requests",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pfm_request_seconds",
            "Request latency (seconds), from first byte read to response sent",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.batch = Histogram(
            "pfm_batch_rows",
            "Probe rows per gallery call",
            ["kind"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.size = Gauge(
            "pfm_gallery_identities", "Identities enrolled", ["gallery"], registry=self.registry
        )
        self.templates = Gauge(
            "pfm_gallery_templates", "Templates enrolled", ["gallery"], registry=self.registry
        )
        self.purpose = Counter(
            "pfm_purpose_requests",
            "identify / verify / enroll requests per consent purpose ('default': the gallery's "
            "purpose; 'other': beyond the first 64 purposes seen)",
            ["gallery", "endpoint", "purpose", "status"],
            registry=self.registry,
        )
        self.purpose_latency = Histogram(
            "pfm_purpose_request_seconds",
            "Latency of identify / verify / enroll requests per consent purpose (seconds)",
            ["gallery", "endpoint", "purpose"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self._purposes: set[str] = set()
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._purpose_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    def observe_purpose(
        self, gallery: str, endpoint: str, purpose: str | None, status: int, seconds: float
    ) -> None:
        """Count one request under its purpose (label values bounded: 64 purposes, then 'other')."""
        p = "default" if purpose is None else purpose
        if p not in self._purposes:
            if len(self._purposes) >= 64:
                p = "other"
            else:
                self._purposes.add(p)
        key = (gallery, endpoint, p, status)
        c = self._purpose_children.get(key)
        if c is None:
            c = self._purpose_children[key] = (
                self.purpose.labels(gallery, endpoint, p, str(status)),
                self.purpose_latency.labels(gallery, endpoint, p),
            )
        c[0].inc()
        c[1].observe(seconds)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one request and its latency (label children cached: no lookup per request)."""
        key = (endpoint, method, status)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = (
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint),
            )
        c[0].inc()
        c[1].observe(seconds)


def _endpoint(path: str) -> str:
    """A bounded metrics / log label for a path (never an identity id)."""
    parts = path.split("/")
    if len(parts) >= 2 and parts[1] == "console":
        return "console"
    if len(parts) >= 5 and parts[1] == "v1" and parts[2] == "galleries":
        return "identities" if parts[4] == "identities" else parts[4]
    return path if path in ("/healthz", "/readyz", "/metrics", "/openapi.json") else "other"


class _Observe:
    """ASGI middleware: request counter, latency histogram, one JSON access-log line, and the
    fast lane of the two hot endpoints.

    ``POST /v1/galleries/{name}/identify`` and ``…/verify`` (the requests a service answers
    thousands of times a second) are handed straight to their handler, the same function the
    router would call (errors become problem details inside it, :func:`_problems`), without
    Starlette's router, exception middleware and per-route wrappers: measured on the bench,
    those layers cost as much CPU per request as uvicorn's HTTP parsing and writing together.
    Every other path goes through the Starlette application as before.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: _Metrics,
        hot: dict[str, Callable[[Request], Awaitable[Response]]] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.hot = dict(hot or {})

    def _hot_handler(self, scope: Scope) -> Callable[[Request], Awaitable[Response]] | None:
        """The handler of a hot request (sets its ``path_params``), else None."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        parts = scope["path"].split("/")
        # ["", "v1", "galleries", name, "identify"]: the route /v1/galleries/{name}/identify
        if len(parts) != 5 or parts[1] != "v1" or parts[2] != "galleries" or not parts[3]:
            return None
        h = self.hot.get(parts[4])
        if h is not None:
            scope["path_params"] = {"name": parts[3]}
        return h

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def _send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            hot = self._hot_handler(scope)
            if hot is None:
                await self.app(scope, receive, _send)
            else:
                resp = await hot(Request(scope, receive))  # never raises: _problems
                await resp(scope, receive, _send)
        finally:
            dt = time.perf_counter() - t0
            ep = _endpoint(scope["path"])
            self.metrics.observe_request(ep, scope["method"], status[0], dt)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "endpoint": ep,
                        "method": scope["method"],
                        "status": status[0],
                        "ms": round(dt * 1000, 3),
                        "key": scope.get("state", {}).get("key_id"),
                    },
                )


# ------------------------------------------------------------------ the service
class _Service:
    def __init__(self, config: ServeConfig, galleries: dict[str, Gallery] | None) -> None:
        self.config = config
        self.galleries: dict[str, Gallery] = dict(galleries or {})
        self._owned = galleries is None
        self.keys = None if config.keys is None else KeyStore(config.keys)
        self.metrics = _Metrics()
        self.rates = RateWindow(self.metrics.registry)
        self.executor: ThreadPoolExecutor | None = None
        self.batcher: Batcher | None = None
        self.photos: PhotoEmbedder | None = None
        #: "off" (no embedder) | "loading" | "ready" | "failed: <reason>"
        self.photo_state = "off"
        self.ready = False
        #: name -> "opening" | "open" | "failed: <reason>" (galleries given open: "open")
        self.state: dict[str, str] = {n: "open" for n in self.galleries}
        self.startup_error: BaseException | None = None
        #: called when a gallery cannot be opened (run_server stops the server, exit non-zero)
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._opener: asyncio.Task[None] | None = None

    def _open_one(self, name: str, path: str) -> Gallery:
        kf = self.config.gallery_keys.get(name)
        opts: dict[str, Any] = {} if kf is None else {"key_provider": FileKeyProvider(kf)}
        try:
            return Gallery.open(path, **opts)
        except Exception as exc:
            where = f"key file {kf!r}" if kf is not None else "its key provider"
            log.error(
                "cannot open gallery %r at %r with %s: %s: %s (an encrypted gallery needs its "
                "key: --gallery-key %s=FILE, [gallery_keys] in the configuration, the "
                "PYFACEMATCH_GALLERY_KEY variable, or the key file beside the db)",
                name,
                path,
                where,
                type(exc).__name__,
                exc,
                name,
                extra={"gallery": name},
            )
            raise

    async def _open_all(self) -> None:
        """Open the configured galleries one after the other (index loaded and tuned)."""
        loop = asyncio.get_running_loop()
        if not await self._load_photos():
            return
        for name, path in self.config.galleries.items():
            try:
                g = await loop.run_in_executor(self.executor, self._open_one, name, path)
            except Exception as exc:
                self.state[name] = f"failed: {type(exc).__name__}: {exc}"
                self.startup_error = exc
                if self.on_fatal is not None:
                    self.on_fatal(exc)
                return
            self.galleries[name] = g
            self.state[name] = "open"
            log.info("gallery opened", extra={"gallery": name})
        self.ready = True

    async def _load_photos(self) -> bool:
        """Start the embedder's worker processes and load its model; False if it failed."""
        if self.photos is None:
            return True
        self.photo_state = "loading"
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.photos.load)
        except Exception as exc:
            self.photo_state = f"failed: {type(exc).__name__}: {exc}"
            log.error(
                "cannot load the embedder %r: %s: %s (install its extra, e.g. pip install "
                "'pyfacematch[dlib]', or start without --embedder)",
                self.config.embedder,
                type(exc).__name__,
                exc,
            )
            self.startup_error = exc
            if self.on_fatal is not None:
                self.on_fatal(exc)
            return False
        self.photo_state = "ready"
        log.info("embedder loaded", extra={"embedder": self.photos.name, "dim": self.photos.dim})
        return True

    # lifespan ---------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.executor = ThreadPoolExecutor(self.config.threads, thread_name_prefix="pfm-serve")
        self.batcher = Batcher(
            self.executor,
            enabled=self.config.batching,
            max_wait_ms=self.config.max_wait_ms,
            max_batch=self.config.max_batch,
            on_batch=lambda kind, n: self.metrics.batch.labels(kind).observe(n),
            max_inflight=self.config.max_inflight or max(1, os.cpu_count() or 1),
            max_refill_ms=self.config.max_refill_ms,
        )
        if self.config.embedder is not None:
            self.photos = PhotoEmbedder(
                self.config.embedder,
                workers=self.config.embed_workers,
                max_image_bytes=self.config.max_image_bytes,
                max_image_pixels=self.config.max_image_pixels,
                max_wait_ms=max(self.config.max_wait_ms, 2.0),
                max_batch=self.config.max_images,
                on_batch=lambda kind, n: self.metrics.batch.labels(kind).observe(n),
            )
        try:
            if self._owned:
                # opened after the server listens: /healthz answers and /readyz says 503 with
                # each gallery's state until all are open and tuned
                self.state = {n: "opening" for n in self.config.galleries}
                self._opener = asyncio.create_task(self._open_all())
            else:
                self._opener = asyncio.create_task(self._ready_given())
            yield
        finally:
            # uvicorn calls this after in-flight requests finished (graceful SIGTERM)
            self.ready = False
            if self._opener is not None:
                with contextlib.suppress(BaseException):
                    await self._opener  # a gallery being opened is closed below
            await self.batcher.close()
            if self.photos is not None:
                await self.photos.close()
            if self._owned:
                for name, g in self.galleries.items():
                    try:
                        g.close()  # checkpoint + release the writer lock; every write is committed
                        log.info("gallery closed", extra={"gallery": name})
                    except Exception:
                        log.exception("closing gallery failed", extra={"gallery": name})
            self.executor.shutdown(wait=True)

    async def _ready_given(self) -> None:
        if await self._load_photos():
            self.ready = True

    # helpers ------------------------------------------------------------
    def _gallery(
        self, request: Request, scope: str | tuple[str, ...] | None
    ) -> tuple[str, Gallery]:
        """The gallery of the path after authentication (401), scope (403) and rate (429) checks.

        ``scope`` None: any scope on the gallery will do; a tuple: any of those. A key without
        the scope on a gallery gets 403 whether or not the gallery exists (names are not
        disclosed to it). A configured gallery still being opened answers 503 + Retry-After.
        """
        name = request.path_params["name"]
        console = request.scope["path"].startswith("/console/")
        if console:
            self._console_csrf(request)
            scope = "admin"  # every console action needs admin on the gallery
        if self.keys is not None:
            token = self._token(request, cookie=console)
            key = self.keys.authenticate(token)
            request.state.key_id = key.id
            if scope is None:
                scope = next((s for s in SCOPES if key.allows(name, s)), "identify")
            elif isinstance(scope, tuple):
                scope = next((s for s in scope if key.allows(name, s)), scope[0])
            self.keys.authorize(key, name, scope)
        g = self.galleries.get(name)
        if g is None and name in self.state:
            raise HTTPProblem(
                503,
                "gallery-starting",
                "Gallery not open yet",
                f"gallery {name!r} is {self.state[name].split(':')[0]}: see /readyz",
                headers={"Retry-After": "1"},
            )
        if g is None:
            raise HTTPProblem(
                404,
                "unknown-gallery",
                "Unknown gallery",
                f"no gallery named {name!r} is served here; served: {sorted(self.galleries)}",
            )
        return name, g

    @staticmethod
    def _token(request: Request, *, cookie: bool) -> str | None:
        """The API key of a request: X-API-Key, Authorization: Bearer, or the console cookie."""
        token = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if token is None and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if token is None and cookie:
            token = request.cookies.get(COOKIE)
        return token

    @staticmethod
    def _console_csrf(request: Request) -> None:
        if request.headers.get(CONSOLE_HEADER) != "1":
            raise HTTPProblem(
                403,
                "console-header-missing",
                "Console calls need their header",
                f"/console/api calls must send '{CONSOLE_HEADER}: 1' (the console page does; "
                "other clients use /v1 with an API key)",
            )

    def _console_galleries(self, request: Request, *, api: bool) -> tuple[str | None, list[str]]:
        """(key id, galleries it administers) of a console request; 401 / 403 otherwise."""
        names = list(self.state)
        if self.keys is None:
            return None, names
        if api:
            self._console_csrf(request)
        key = self.keys.authenticate(self._token(request, cookie=True))
        request.state.key_id = key.id
        allowed = [n for n in names if key.allows(n, "admin")]
        if not allowed:
            raise HTTPProblem(
                403,
                "forbidden",
                "Scope missing",
                f"key {key.id!r} has the 'admin' scope on no served gallery: the console needs it",
            )
        return key.id, allowed

    async def _body(self, request: Request, limit: int | None = None) -> bytes:
        limit = self.config.max_body_bytes if limit is None else limit
        cl = request.headers.get("content-length")
        too_big = HTTPProblem(
            413,
            "body-too-large",
            "Request body too large",
            f"the body limit is {limit} bytes: send fewer templates per request",
        )
        if cl is not None and cl.isdigit() and int(cl) > limit:
            raise too_big
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise too_big
        return bytes(buf)

    async def _upload(self, request: Request) -> Upload:
        """A multipart photo request, size-limited before it is parsed."""
        if self.photos is None:
            raise HTTPProblem(
                415,
                "photos-not-enabled",
                "Photo uploads are not enabled",
                "this server has no embedder: send templates (JSON, float32 or .npy), or start "
                'the server with --embedder dlib (or embedder = "dlib" in its TOML file)',
            )
        if self.photo_state != "ready":
            raise HTTPProblem(
                503,
                "embedder-starting",
                "Embedder not ready",
                f"the embedder is {self.photo_state.split(':')[0]}: see /readyz",
                headers={"Retry-After": "1"},
            )
        c = self.config
        body = await self._body(request, c.max_images * c.max_image_bytes + 65536)
        return await read_upload(
            body, request.headers, max_images=c.max_images, max_image_bytes=c.max_image_bytes
        )

    async def _photo_templates(
        self, up: Upload, g: Gallery, max_images: int | None = None
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Templates of the uploaded photos (one face each), embedded off the event loop."""
        assert self.photos is not None
        policy = up.get("faces", "single")
        if policy not in FACE_POLICIES:
            raise HTTPProblem(
                400,
                "invalid-parameter",
                "Bad faces parameter",
                f"faces must be one of {FACE_POLICIES}, got {policy!r}",
            )
        if max_images is not None and len(up.images) > max_images:
            raise HTTPProblem(
                413,
                "too-many-images",
                "Too many images",
                f"{len(up.images)} images sent, this endpoint takes {max_images}",
            )
        results = await self.photos.embed(up.images)
        return to_templates(results, policy, g.dim)

    @staticmethod
    def _actor(request: Request) -> str | None:
        """The API key id of the request (None without keys: the gallery's own actor)."""
        a = getattr(request.state, "key_id", None)
        return a if isinstance(a, str) else None

    @staticmethod
    def _purpose(v: Any) -> str | None:
        return None if v is None else check_purpose(v)

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn)

    # endpoints ----------------------------------------------------------
    async def identify(self, request: Request) -> Response:
        name, g = self._gallery(request, "identify")
        ct = media_type(request.headers.get("content-type"))
        q = request.query_params
        faces: list[dict[str, Any]] | None = None
        src: Any
        if ct == MULTIPART:
            up = await self._upload(request)
            src = up
            request.state.purpose = src.get("purpose")
            p, faces = await self._photo_templates(up, g)
        else:
            body = await self._body(request)
            obj = parse_json(body) if ct == JSON_TYPE else None
            src = obj if obj is not None else q
            request.state.purpose = src.get("purpose")
            field = "probes" if obj is None or "probes" in obj else "probe"
            p = decode_templates(
                body,
                ct,
                g.dim,
                field,
                field=field,
                obj=obj,
                max_rows=self.config.max_probes,
                sent_dim=q.get("dim"),
            )
        k = opt_int(src.get("k"), "k", 1, 1, MAX_K)
        thr = opt_float(src.get("threshold"), "threshold")
        purpose = self._purpose(src.get("purpose"))
        assert self.batcher is not None
        res = await self.batcher.identify(name, g, p, k, thr, purpose, self._actor(request))
        out = [identify_json(r) for r in res]
        if faces is not None:
            for o, f in zip(out, faces):
                o["face"] = f
        return JSONResponse({"results": out})

    async def verify(self, request: Request) -> Response:
        name, g = self._gallery(request, "verify")
        ct = media_type(request.headers.get("content-type"))
        up: Upload | None = None
        src: Any
        if ct == MULTIPART:
            up = src = await self._upload(request)
        else:
            body = await self._body(request)
            obj = parse_json(body) if ct == JSON_TYPE else None
            src = obj if obj is not None else request.query_params
        request.state.purpose = src.get("purpose")
        ident = src.get("identity")
        if not isinstance(ident, str) or not ident:
            raise HTTPProblem(
                400, "malformed-body", "Identity missing", "verify needs 'identity' (a string)"
            )
        faces: list[dict[str, Any]] | None = None
        if up is not None:
            p, faces = await self._photo_templates(up, g, max_images=1)
        else:
            p = decode_templates(
                body,
                ct,
                g.dim,
                "probe",
                field="probe",
                obj=obj,
                max_rows=1,
                sent_dim=request.query_params.get("dim"),
            )
        thr = opt_float(src.get("threshold"), "threshold")
        purpose = self._purpose(src.get("purpose"))
        assert self.batcher is not None
        res = await self.batcher.verify(name, g, ident, p, thr, purpose, self._actor(request))
        out = verify_json(res)
        if faces is not None:
            out["face"] = faces[0]
        return JSONResponse(out)

    async def enroll(self, request: Request) -> Response:
        name, g = self._gallery(request, "enroll")
        ct = media_type(request.headers.get("content-type"))
        obj: dict[str, Any] | None = None
        src: Any
        if ct == MULTIPART:
            up = src = await self._upload(request)
            request.state.purpose = src.get("purpose")
            ident = check_id(src.get("identity"))
            t, _ = await self._photo_templates(up, g)
            raw = up.get("metadata")
            meta = None if raw is None else parse_json(raw.encode("utf-8"))
        else:
            body = await self._body(request)
            obj = parse_json(body) if ct == JSON_TYPE else None
            src = obj if obj is not None else request.query_params
            request.state.purpose = src.get("purpose")
            ident = check_id(src.get("identity"))
            t = decode_templates(
                body,
                ct,
                g.dim,
                "templates",
                field="templates",
                obj=obj,
                max_rows=self.config.max_probes,
            )
            meta = obj.get("metadata") if obj is not None else None
        if meta is not None:
            check_json(meta)
        od = src.get("on_duplicate")
        if od is not None:
            check_duplicate_option(od)
        purpose = self._purpose(src.get("purpose"))
        actor = self._actor(request)

        def run() -> None:
            with g.acting_as(actor):
                g.enroll(ident, t, metadata=meta, on_duplicate=od, purpose=purpose)

        await self._in_thread(run)
        return JSONResponse({"identity": ident, "templates": int(t.shape[0])}, status_code=201)

    async def remove(self, request: Request) -> Response:
        _, g = self._gallery(request, "remove")
        ident = check_id(request.path_params["identity"])
        actor = self._actor(request)

        def run() -> None:
            with g.acting_as(actor):
                g.remove(ident)

        await self._in_thread(run)
        return JSONResponse({"removed": ident})

    @staticmethod
    def _record(r: ConsentRecord) -> dict[str, Any]:
        now = time.time()
        return {**asdict(r), "active": r.expires_at is None or r.expires_at > now}

    async def consent_grant(self, request: Request) -> Response:
        _, g = self._gallery(request, "enroll")
        ident = check_id(request.path_params["identity"])
        body = await self._body(request)
        if media_type(request.headers.get("content-type")) != JSON_TYPE:
            raise HTTPProblem(415, "unsupported-media-type", "JSON only", "consent takes JSON")
        obj = parse_json(body)
        purpose = check_purpose(obj.get("purpose"))
        source = obj.get("source")
        if not isinstance(source, str) or not source:
            raise HTTPProblem(
                400,
                "malformed-body",
                "Consent source missing",
                "grant needs 'source' (where the consent comes from: form id, app screen, …)",
            )
        exp = opt_float(obj.get("expires_at"), "expires_at")
        actor = self._actor(request)

        def run() -> ConsentRecord:
            with g.acting_as(actor):
                return g.grant_consent(ident, purpose, source=source, expires_at=exp)

        rec = await self._in_thread(run)
        return JSONResponse(self._record(rec), status_code=201)

    async def consent_withdraw(self, request: Request) -> Response:
        _, g = self._gallery(request, "remove")
        ident = check_id(request.path_params["identity"])
        purpose = self._purpose(request.query_params.get("purpose"))
        actor = self._actor(request)

        def run() -> list[str]:
            with g.acting_as(actor):
                return g.withdraw_consent(ident, purpose)

        left = await self._in_thread(run)
        return JSONResponse(
            {
                "identity": ident,
                "withdrawn": purpose if purpose is not None else "*",
                "remaining": left,
                # nothing left: erased like DELETE …/identities/{id}, and re-enrollment is
                # refused (tombstone) until consent is granted again
                "opted_out": not left,
            }
        )

    async def consent_show(self, request: Request) -> Response:
        _, g = self._gallery(request, ("verify", "admin"))
        ident = check_id(request.path_params["identity"])
        recs = await self._in_thread(lambda: g.consent_records(ident))
        return JSONResponse({"identity": ident, "records": [self._record(r) for r in recs]})

    async def info(self, request: Request) -> Response:
        name, g = self._gallery(request, None)
        return JSONResponse(await self._in_thread(lambda: self._info(name, g)))

    @staticmethod
    def _info(name: str, g: Gallery) -> dict[str, Any]:
        i = g.info()
        thr = {}
        for kind in ("fmr", "fpir"):
            rec = g.threshold(kind)
            thr[kind] = None if rec is None else asdict(rec)
        return {
            "name": name,
            "dim": g.dim,
            "identities": i["identities"],
            "templates": i["templates"],
            "backend": i["backend"],
            "read_only": i["read_only"],
            "erasure_pending": bool(i["erasure"]["pending"]),
            "thresholds": thr,
        }

    async def calibrate(self, request: Request) -> Response:
        _, g = self._gallery(request, "admin")
        body = await self._body(request)
        ct = media_type(request.headers.get("content-type"))
        if ct != JSON_TYPE:
            raise HTTPProblem(415, "unsupported-media-type", "JSON only", "calibrate takes JSON")
        obj = parse_json(body)
        kw: dict[str, Any] = {
            "fmr": opt_float(obj.get("fmr"), "fmr"),
            "fpir": opt_float(obj.get("fpir"), "fpir"),
            "conservative": bool(obj.get("conservative", False)),
        }
        if obj.get("confidence") is not None:
            kw["confidence"] = opt_float(obj.get("confidence"), "confidence")
        if "impostor_scores" in obj:
            s = obj["impostor_scores"]
            if not isinstance(s, list) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in s
            ):
                raise HTTPProblem(400, "malformed-body", "Bad scores", "impostor_scores: numbers")
            kw["impostor_scores"] = np.asarray(s, np.float64)
        if "nonmated_probes" in obj:
            kw["nonmated_probes"] = decode_templates(
                body, ct, g.dim, "nonmated_probes", field="nonmated_probes", obj=obj
            )
        if "pairs" in obj:
            pr = obj["pairs"]
            if not isinstance(pr, list) or len(pr) != 2:
                raise HTTPProblem(400, "malformed-body", "Bad pairs", "pairs: [A rows, B rows]")
            kw["pairs"] = tuple(
                decode_templates(body, ct, g.dim, f"pairs[{i}]", field="x", obj={"x": pr[i]})
                for i in range(2)
            )
        actor = self._actor(request)

        def run() -> Any:
            with g.acting_as(actor):
                return g.calibrate(**kw)

        rec = await self._in_thread(run)
        return JSONResponse(asdict(rec))

    async def audit_verify(self, request: Request) -> Response:
        _, g = self._gallery(request, "admin")
        return JSONResponse(await self._in_thread(g.audit_verify))

    # console ------------------------------------------------------------
    def _gallery_rows(self, names: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for n in names:
            g = self.galleries.get(n)
            st = self.state.get(n, "open")
            if g is None:
                rows.append({"name": n, "state": st})
                continue
            i = self._info(n, g)
            t = self._tuning(g)
            rows.append({**i, "state": st, "tuned": t["tuned"], "search": t["search"]})
        return rows

    def _embedder_info(self) -> dict[str, Any]:
        p = self.photos
        return {
            "state": self.photo_state,
            "name": None if p is None else p.name,
            "dim": None if p is None else p.dim,
        }

    def _html(self, text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            text,
            status_code=status,
            headers={
                "Content-Security-Policy": CONSOLE_CSP,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def console_page(self, request: Request) -> Response:
        try:
            key_id, names = self._console_galleries(request, api=False)
        except HTTPProblem as exc:
            msg = None if exc.status == 401 and COOKIE not in request.cookies else exc.detail
            return self._html(login_page(msg))
        rows = await self._in_thread(lambda: self._gallery_rows(names))
        return self._html(
            render_page(
                key_id=key_id,
                galleries=rows,
                rates=self.rates.sample(),
                embedder=self._embedder_info(),
                ready=self.ready,
            )
        )

    async def console_login(self, request: Request) -> Response:
        body = await self._body(request, 8192)
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
        resp = RedirectResponse("/console", status_code=303)
        if self.keys is not None:
            try:
                key = self.keys.authenticate(token)
            except HTTPProblem as exc:
                return self._html(login_page(exc.detail))
            if not any(key.allows(n, "admin") for n in self.state):
                return self._html(
                    login_page(f"key {key.id!r} has the 'admin' scope on no served gallery")
                )
            resp.set_cookie(
                COOKIE,
                token,
                path="/console",
                httponly=True,
                samesite="strict",
                secure=self.config.ssl_certfile is not None,
            )
        return resp

    async def console_logout(self, request: Request) -> Response:
        resp = RedirectResponse("/console", status_code=303)
        resp.delete_cookie(COOKIE, path="/console")
        return resp

    async def console_stats(self, request: Request) -> Response:
        _, names = self._console_galleries(request, api=True)
        rows = await self._in_thread(lambda: self._gallery_rows(names))
        return JSONResponse(
            {
                "galleries": rows,
                "rates": self.rates.sample(),
                "embedder": self._embedder_info(),
                "ready": self.ready,
            }
        )

    async def console_static(self, request: Request) -> Response:
        js = request.url.path.endswith(".js")
        return Response(
            CONSOLE_JS if js else CONSOLE_CSS,
            media_type="text/javascript" if js else "text/css",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @staticmethod
    def _tuning(g: Gallery) -> dict[str, Any]:
        """A gallery's index state from :meth:`Gallery.index_info`.

        "Tuned" means searches run at a depth measured for the gallery: exact search (the
        ``exact`` backend, a small gallery, or a fallback), or an approximate index whose depth
        was tuned against ``recall_target`` (``measured_recall_at_1`` is set).
        """
        i = g.index_info()
        exact = i.get("search") == "exact"
        return {
            "tuned": bool(exact or i.get("measured_recall_at_1") is not None),
            "backend": i.get("backend"),
            "search": i.get("search"),
            "depth": i.get("depth"),
            "measured_recall_at_1": i.get("measured_recall_at_1"),
            "recall_target": i.get("recall_target"),
            "fallback": i.get("fallback"),
            "templates": i.get("templates"),
        }

    async def readyz(self, request: Request) -> Response:
        body: dict[str, Any] = {}
        ok = self.ready
        for name, st in self.state.items():
            g = self.galleries.get(name)
            if g is None:
                body[name] = {"state": st, "tuned": False}
                ok = False
                continue
            t = await self._in_thread(functools.partial(self._tuning, g))
            body[name] = {"state": st, **t}
            ok = ok and t["tuned"]
        return JSONResponse(
            {"status": "ready" if ok else "starting", "galleries": body},
            status_code=200 if ok else 503,
        )

    async def metrics_endpoint(self, request: Request) -> Response:
        for name, g in self.galleries.items():
            self.metrics.size.labels(name).set(len(g))
            self.metrics.templates.labels(name).set(g.n_templates)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)


def _problems(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Any exception of a handler as an RFC 9457 response (faults logged, 500)."""

    async def wrapped(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except Exception as exc:
            status, body = problem_body(exc, request.scope["path"])
            if status >= 500 and not isinstance(exc, HTTPProblem):  # 503 starting is no fault
                log.error(
                    "request failed: %s",
                    type(exc).__name__,
                    exc_info=exc,
                    extra={"endpoint": _endpoint(request.scope["path"])},
                )
            headers = exc.headers if isinstance(exc, HTTPProblem) else None
            resp = JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_TYPE)
        _observe_purpose(request, resp.status_code, time.perf_counter() - t0)
        return resp

    return wrapped


def _observe_purpose(request: Request, status: int, seconds: float) -> None:
    """Per-purpose metrics of identify / verify / enroll on a served gallery."""
    if not hasattr(request.state, "purpose"):
        return  # not a matching request, or refused before its body was read
    svc: _Service = request.app.state.service
    name = request.path_params.get("name")
    if name not in svc.galleries:
        return
    p = request.state.purpose
    if p is not None:
        try:
            p = check_purpose(p)
        except Exception:
            p = "invalid"
    svc.metrics.observe_purpose(name, _endpoint(request.scope["path"]), p, status, seconds)


async def _http_exc(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    slug = {404: "not-found", 405: "method-not-allowed"}.get(code, "http")
    body = {
        "type": "urn:pyfacematch:problem:" + slug,
        "title": str(getattr(exc, "detail", "")) or "HTTP error",
        "status": code,
        "detail": f"{request.method} {request.url.path}: see /openapi.json for the endpoints",
        "instance": request.url.path,
    }
    return JSONResponse(body, status_code=code, media_type=PROBLEM_TYPE)


def build_app(config: ServeConfig, galleries: dict[str, Gallery] | None = None) -> Starlette:
    """The ASGI application of a service.

    Parameters
    ----------
    config : ServeConfig
    galleries : dict name -> Gallery, or None
        Already open galleries (the caller closes them); None opens ``config.galleries`` in the
        lifespan startup and closes them at shutdown.

    Returns
    -------
    starlette.applications.Starlette
    """
    svc = _Service(config, galleries)
    g = "/v1/galleries/{name}"
    hot = {"identify": _problems(svc.identify), "verify": _problems(svc.verify)}
    routes = [
        Route(g + "/identify", hot["identify"], methods=["POST"]),
        Route(g + "/verify", hot["verify"], methods=["POST"]),
        Route(g + "/enroll", _problems(svc.enroll), methods=["POST"]),
        Route(g + "/identities/{identity}", _problems(svc.remove), methods=["DELETE"]),
        Route(
            g + "/identities/{identity}/consent",
            _problems(svc.consent_grant),
            methods=["POST"],
        ),
        Route(
            g + "/identities/{identity}/consent",
            _problems(svc.consent_withdraw),
            methods=["DELETE"],
        ),
        Route(
            g + "/identities/{identity}/consent",
            _problems(svc.consent_show),
            methods=["GET"],
        ),
        Route(g + "/info", _problems(svc.info), methods=["GET"]),
        Route(g + "/calibrate", _problems(svc.calibrate), methods=["POST"]),
        Route(g + "/audit/verify", _problems(svc.audit_verify), methods=["POST"]),
        Route("/console", svc.console_page, methods=["GET"]),
        Route("/console/login", svc.console_login, methods=["POST"]),
        Route("/console/logout", svc.console_logout, methods=["POST"]),
        Route("/console/console.js", svc.console_static, methods=["GET"]),
        Route("/console/console.css", svc.console_static, methods=["GET"]),
        Route("/console/api/stats", _problems(svc.console_stats), methods=["GET"]),
        Route(
            "/console/api/galleries/{name}/identities/{identity}/consent",
            _problems(svc.consent_show),
            methods=["GET"],
        ),
        Route(
            "/console/api/galleries/{name}/identities/{identity}/consent",
            _problems(svc.consent_withdraw),
            methods=["DELETE"],
        ),
        Route(
            "/console/api/galleries/{name}/audit/verify",
            _problems(svc.audit_verify),
            methods=["POST"],
        ),
        Route("/console/api/galleries/{name}/identify", _problems(svc.identify), methods=["POST"]),
        Route("/healthz", svc.healthz, methods=["GET"]),
        Route("/readyz", svc.readyz, methods=["GET"]),
        Route("/metrics", svc.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", svc.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=svc.lifespan, exception_handlers={HTTPException: _http_exc}
    )
    app.add_middleware(_Observe, metrics=svc.metrics, hot=hot)
    app.state.service = svc
    return app


# ------------------------------------------------------------------ OpenAPI
def _op(summary: str, scope: str | None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}},
            "default": {
                "description": "RFC 9457 problem details",
                "content": {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        },
    }
    if scope is not None:
        op["security"] = [{"apiKey": []}, {"bearer": []}]
        op["x-scope"] = scope
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    return op


_ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_BINARY = {
    "application/octet-stream": {
        "schema": {"type": "string", "format": "binary"},
        "x-description": "float32 little-endian rows; parameters in the query string",
    },
    "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
}
_PHOTO = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {
                "image": {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "description": "one or more photos (servers started with --embedder)",
                },
                "faces": {"enum": ["single", "largest"], "default": "single"},
            },
            "required": ["image"],
        },
        "x-description": "the other parameters as form fields; 413 image-too-large, 415 "
        "not-an-image / photos-not-enabled, 422 no-face / several-faces / unreadable-image",
    }
}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_IDENT = {"name": "identity", "in": "path", "required": True, "schema": {"type": "string"}}
_PURPOSE = {
    "type": ["string", "null"],
    "pattern": "^[a-z][a-z0-9_.-]{0,63}$",
    "description": "consent purpose the request is for (default: the gallery's purpose); "
    "query parameter with binary bodies",
}

#: The hand-written OpenAPI 3.1 schema served at ``/openapi.json``.
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "pyfacematch serve", "version": "1"},
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "properties": {
                    k: {"type": t}
                    for k, t in (
                        ("type", "string"),
                        ("title", "string"),
                        ("status", "integer"),
                        ("detail", "string"),
                        ("instance", "string"),
                    )
                },
            }
        },
    },
    "paths": {
        "/v1/galleries/{name}/identify": {
            "parameters": [_NAME],
            "post": _op(
                "Identify (1:N) one or more probes",
                "identify",
                {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "probes": _ROWS,
                                "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                                "threshold": {"type": ["number", "null"]},
                                "purpose": _PURPOSE,
                            },
                            "required": ["probes"],
                        }
                    },
                    **_BINARY,
                    **_PHOTO,
                },
            ),
        },
        "/v1/galleries/{name}/verify": {
            "parameters": [_NAME],
            "post": _op(
                "Verify (1:1) a probe against an identity",
                "verify",
                {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "identity": {"type": "string"},
                                "probe": {"type": "array", "items": {"type": "number"}},
                                "threshold": {"type": ["number", "null"]},
                                "purpose": _PURPOSE,
                            },
                            "required": ["identity", "probe"],
                        }
                    },
                    **_BINARY,
                    **_PHOTO,
                },
            ),
        },
        "/v1/galleries/{name}/enroll": {
            "parameters": [_NAME],
            "post": _op(
                "Enroll an identity with one or more templates",
                "enroll",
                {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "identity": {"type": "string"},
                                "templates": _ROWS,
                                "metadata": {"type": "object"},
                                "on_duplicate": {"enum": ["refuse", "append"]},
                                "purpose": _PURPOSE,
                            },
                            "required": ["identity", "templates"],
                        }
                    },
                    **_BINARY,
                    **_PHOTO,
                },
            ),
        },
        "/v1/galleries/{name}/identities/{identity}": {
            "parameters": [
                _NAME,
                {"name": "identity", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "delete": _op("Remove an identity (opt-out)", "remove"),
        },
        "/v1/galleries/{name}/identities/{identity}/consent": {
            "parameters": [_NAME, _IDENT],
            "post": _op(
                "Grant (or renew) consent for a purpose; lifts an opt-out tombstone",
                "enroll",
                {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "purpose": _PURPOSE,
                                "source": {"type": "string"},
                                "expires_at": {"type": ["number", "null"]},
                            },
                            "required": ["purpose", "source"],
                        }
                    }
                },
            ),
            "delete": {
                **_op(
                    "Withdraw consent for ?purpose=, or for every purpose (opt-out: the "
                    "identity is erased and re-enrollment refused until new consent); answers "
                    "remaining purposes and opted_out",
                    "remove",
                ),
                "parameters": [
                    {"name": "purpose", "in": "query", "required": False, "schema": _PURPOSE}
                ],
            },
            "get": _op("Consent records of an identity", "verify or admin"),
        },
        "/v1/galleries/{name}/info": {"parameters": [_NAME], "get": _op("Gallery info", "any")},
        "/v1/galleries/{name}/calibrate": {
            "parameters": [_NAME],
            "post": _op(
                "Calibrate and store a threshold (fmr with impostor_scores or pairs; fpir with "
                "impostor_scores or nonmated_probes)",
                "admin",
                {"application/json": {"schema": {"type": "object"}}},
            ),
        },
        "/v1/galleries/{name}/audit/verify": {
            "parameters": [_NAME],
            "post": _op("Verify the audit trail's hash chain and signed checkpoints", "admin"),
        },
        "/console": {
            "get": {
                "summary": "Operator page (HTML; sign in with an admin key)",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
            }
        },
        "/healthz": {"get": _op("Liveness", None)},
        "/readyz": {
            "get": _op(
                "Readiness: 200 once every gallery is open and its index tuned (exact search, "
                "or an approximate index with a measured recall@1); 503 before, with each "
                "gallery's state",
                None,
            )
        },
        "/metrics": {"get": _op("Prometheus metrics (text format)", None)},
        "/openapi.json": {"get": _op("This schema", None)},
    },
}
