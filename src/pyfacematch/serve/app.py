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
``GET /v1/galleries/{name}/info``                     any scope
``POST /v1/galleries/{name}/calibrate``               admin
``GET /healthz`` ``/readyz`` ``/metrics`` ``/openapi.json``   none
====================================================  =========  ===========================

Errors are RFC 9457 problem details (:mod:`.problems`). Logs carry the route template, status,
latency and key id, never a body, a template or an identity id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyfacematch.gallery import Decision, Gallery, IdentifyResult, VerifyResult
from pyfacematch.gallery.validation import check_duplicate_option, check_id, check_json
from pyfacematch.serve.auth import SCOPES, KeyStore
from pyfacematch.serve.batching import Batcher
from pyfacematch.serve.bodies import (
    JSON_TYPE,
    decode_templates,
    media_type,
    opt_float,
    opt_int,
    parse_json,
)
from pyfacematch.serve.config import ServeConfig
from pyfacematch.serve.problems import HTTPProblem, problem_body

__all__ = ["OPENAPI", "build_app", "decision_json", "identify_json", "verify_json"]

log = logging.getLogger("pyfacematch.serve")
access_log = logging.getLogger("pyfacematch.serve.access")

PROBLEM_TYPE = "application/problem+json"
MAX_K = 1000


# ------------------------------------------------------------------ JSON shapes
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


def _endpoint(path: str) -> str:
    """A bounded metrics / log label for a path (never an identity id)."""
    parts = path.split("/")
    if len(parts) >= 5 and parts[1] == "v1" and parts[2] == "galleries":
        return "identities" if parts[4] == "identities" else parts[4]
    return path if path in ("/healthz", "/readyz", "/metrics", "/openapi.json") else "other"


class _Observe:
    """ASGI middleware: request counter, latency histogram and one JSON access-log line."""

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
            await self.app(scope, receive, _send)
        finally:
            dt = time.perf_counter() - t0
            ep = _endpoint(scope["path"])
            self.metrics.requests.labels(ep, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(ep).observe(dt)
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
        self.executor: ThreadPoolExecutor | None = None
        self.batcher: Batcher | None = None
        self.ready = False

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
        )
        try:
            if self._owned:
                loop = asyncio.get_running_loop()
                for name, path in self.config.galleries.items():
                    self.galleries[name] = await loop.run_in_executor(
                        self.executor, Gallery.open, path
                    )
                    log.info("gallery opened", extra={"gallery": name})
            self.ready = True
            yield
        finally:
            # uvicorn calls this after in-flight requests finished (graceful SIGTERM)
            self.ready = False
            await self.batcher.close()
            if self._owned:
                for name, g in self.galleries.items():
                    try:
                        g.close()  # checkpoint + release the writer lock; every write is committed
                        log.info("gallery closed", extra={"gallery": name})
                    except Exception:
                        log.exception("closing gallery failed", extra={"gallery": name})
            self.executor.shutdown(wait=True)

    # helpers ------------------------------------------------------------
    def _gallery(self, request: Request, scope: str | None) -> tuple[str, Gallery]:
        """The gallery of the path after authentication (401), scope (403) and rate (429) checks.

        ``scope`` None: any scope on the gallery will do. A key without the scope on a gallery
        gets 403 whether or not the gallery exists (names are not disclosed to it).
        """
        name = request.path_params["name"]
        if self.keys is not None:
            token = request.headers.get("x-api-key")
            auth = request.headers.get("authorization", "")
            if token is None and auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
            key = self.keys.authenticate(token)
            request.state.key_id = key.id
            if scope is None:
                scope = next((s for s in SCOPES if key.allows(name, s)), "identify")
            self.keys.authorize(key, name, scope)
        g = self.galleries.get(name)
        if g is None:
            raise HTTPProblem(
                404,
                "unknown-gallery",
                "Unknown gallery",
                f"no gallery named {name!r} is served here; served: {sorted(self.galleries)}",
            )
        return name, g

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
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

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn)

    # endpoints ----------------------------------------------------------
    async def identify(self, request: Request) -> Response:
        name, g = self._gallery(request, "identify")
        body = await self._body(request)
        ct = media_type(request.headers.get("content-type"))
        q = request.query_params
        obj = parse_json(body) if ct == JSON_TYPE else None
        src: Any = obj if obj is not None else q
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
        assert self.batcher is not None
        res = await self.batcher.identify(name, g, p, k, thr)
        return JSONResponse({"results": [identify_json(r) for r in res]})

    async def verify(self, request: Request) -> Response:
        name, g = self._gallery(request, "verify")
        body = await self._body(request)
        ct = media_type(request.headers.get("content-type"))
        obj = parse_json(body) if ct == JSON_TYPE else None
        src: Any = obj if obj is not None else request.query_params
        ident = src.get("identity")
        if not isinstance(ident, str) or not ident:
            raise HTTPProblem(
                400, "malformed-body", "Identity missing", "verify needs 'identity' (a string)"
            )
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
        assert self.batcher is not None
        res = await self.batcher.verify(name, g, ident, p, thr)
        return JSONResponse(verify_json(res))

    async def enroll(self, request: Request) -> Response:
        name, g = self._gallery(request, "enroll")
        body = await self._body(request)
        ct = media_type(request.headers.get("content-type"))
        obj = parse_json(body) if ct == JSON_TYPE else None
        src: Any = obj if obj is not None else request.query_params
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
        await self._in_thread(lambda: g.enroll(ident, t, metadata=meta, on_duplicate=od))
        return JSONResponse({"identity": ident, "templates": int(t.shape[0])}, status_code=201)

    async def remove(self, request: Request) -> Response:
        _, g = self._gallery(request, "remove")
        ident = check_id(request.path_params["identity"])
        await self._in_thread(lambda: g.remove(ident))
        return JSONResponse({"removed": ident})

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
        rec = await self._in_thread(lambda: g.calibrate(**kw))
        return JSONResponse(asdict(rec))

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "galleries": sorted(self.galleries)})

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
        try:
            return await handler(request)
        except Exception as exc:
            status, body = problem_body(exc, request.url.path)
            if status >= 500:
                log.error(
                    "request failed: %s",
                    type(exc).__name__,
                    exc_info=exc,
                    extra={"endpoint": _endpoint(request.url.path)},
                )
            headers = exc.headers if isinstance(exc, HTTPProblem) else None
            return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_TYPE)

    return wrapped


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
    routes = [
        Route(g + "/identify", _problems(svc.identify), methods=["POST"]),
        Route(g + "/verify", _problems(svc.verify), methods=["POST"]),
        Route(g + "/enroll", _problems(svc.enroll), methods=["POST"]),
        Route(g + "/identities/{identity}", _problems(svc.remove), methods=["DELETE"]),
        Route(g + "/info", _problems(svc.info), methods=["GET"]),
        Route(g + "/calibrate", _problems(svc.calibrate), methods=["POST"]),
        Route("/healthz", svc.healthz, methods=["GET"]),
        Route("/readyz", svc.readyz, methods=["GET"]),
        Route("/metrics", svc.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", svc.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=svc.lifespan, exception_handlers={HTTPException: _http_exc}
    )
    app.add_middleware(_Observe, metrics=svc.metrics)
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
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

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
                            },
                            "required": ["probes"],
                        }
                    },
                    **_BINARY,
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
                            },
                            "required": ["identity", "probe"],
                        }
                    },
                    **_BINARY,
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
                            },
                            "required": ["identity", "templates"],
                        }
                    },
                    **_BINARY,
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
        "/healthz": {"get": _op("Liveness", None)},
        "/readyz": {"get": _op("Readiness: galleries loaded", None)},
        "/metrics": {"get": _op("Prometheus metrics (text format)", None)},
        "/openapi.json": {"get": _op("This schema", None)},
    },
}
