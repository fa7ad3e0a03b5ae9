"""The KServe v2 / Triton HTTP endpoint on the loader, as a Starlette ASGI app.

Every built bundle of a dist folder is registered with one `BundleCache`; a request for a bundle
or for a model inside one loads it on demand, evicting idle bundles to stay within the budget.
Inference runs in Starlette's thread pool, so requests for different bundles run concurrently and
the cache's own locking keeps one load per bundle. The handlers are methods of one `Service`,
which holds what they share (the loader, the metrics, what requests in flight hold, the bundles
unloaded through the repository API) and records each inference's outcome once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fusedinf_cc import __version__
from fusedinf_cc.artifacts.index import index_path, read_index
from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, TENSORRT
from fusedinf_cc.common.errors import FusedInfError, UserInputError, first_line
from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.serve.metrics import Metrics
from fusedinf_cc.serve.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    encode_response,
    parse_request,
    tensor_metadata,
)

DEFAULT_MAX_BODY_BYTES = 64 * 2**20
# JSON tensors take about 15 bytes of Python objects per byte of text while they are parsed
# (measured: a 57 MiB JSON body took a server from 146 to 837 MiB). So the JSON part of a
# request has its own, smaller limit, and what requests in flight may take is bounded.
DEFAULT_MAX_JSON_BYTES = 8 * 2**20
JSON_EXPANSION = 16
DEFAULT_MAX_INFLIGHT_BYTES = 512 * 2**20
# A body that stops arriving for this long is dropped (408): it holds memory and a connection.
DEFAULT_BODY_TIMEOUT_S = 30.0
UNKNOWN_LABEL = "(unknown)"
logger = logging.getLogger("fusedinf_cc.serve")
_ARTIFACT_PREFERENCE = {TENSORRT: ("engine",), DEFAULT_RUNTIME: ("onnx", "ort")}


@dataclass(frozen=True)
class ServeConfig:
    dist: Path
    budget_bytes: int
    policy: str = "gdsf"
    runtime: str = DEFAULT_RUNTIME
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    header_timeout_s: float = 10.0
    max_connections: int | None = None  # None: from the process's file-descriptor limit
    keep_page_cache: bool = False  # evicted bundles' files stay in the page cache
    loading: str | None = None  # the loading policy (`runtime/loading.py`); None: the default
    prefetch: bool = False  # read the bundle that usually comes next while a request computes
    # Open each bundle's session at start, standing by with nothing read, where it fits: a
    # first request then reads and runs without opening a session (`BundleCache.open_ahead`).
    open_ahead: bool = True

    def to_env(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "dist": str(self.dist)})

    @classmethod
    def from_env(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        return cls(**{**data, "dist": Path(data["dist"])})


class InflightMemory:
    """What the requests being read and decoded may hold at once, estimated from their sizes
    (JSON at `JSON_EXPANSION` times its text); a request that does not fit is answered 503."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    @staticmethod
    def estimate(body_bytes: int, json_bytes: int) -> int:
        return body_bytes + (JSON_EXPANSION - 1) * json_bytes

    def reserve(self, amount: int) -> bool:
        with self._lock:
            if self.held + amount > self.limit and self.held > 0:
                return False
            self.held += amount
            return True

    def release(self, amount: int) -> None:
        with self._lock:
            self.held -= amount


def register_dist(cache: BundleCache, dist: Path, runtime: str) -> list[str]:
    """Register every built bundle under `dist` (its engine for tensorrt, else its ONNX)."""
    if not dist.is_dir():
        raise UserInputError(f"{dist}: no such folder of bundles")
    names = []
    for folder in sorted(p for p in dist.iterdir() if p.is_dir()):
        index = read_index(folder)
        if index is None:
            continue
        artifacts = {a["target"]: a["path"] for a in index["artifacts"]}
        preferred = _ARTIFACT_PREFERENCE.get(runtime, ("onnx", "ort"))
        chosen = next((artifacts[t] for t in preferred if t in artifacts), None)
        if chosen is None:
            continue
        inputs = index_path(folder, index["inputs"]) if index.get("inputs") else None
        cache.register(index_path(folder, chosen), name=index["name"], feeds_path=inputs)
        names.append(index["name"])
    if not names:
        raise UserInputError(f"{dist}: no built bundles for {runtime} (run `bundle build`)")
    return names


class Service:
    """The endpoint's state, and a handler per route."""

    def __init__(self, config: ServeConfig, cache: BundleCache):
        self.config = config
        self.cache = cache
        self.metrics = Metrics()
        self.inflight = InflightMemory(config.max_inflight_bytes)
        self.unloaded: set[str] = set()  # bundles unloaded through the repository API: not ready
        self._specs: dict[str, tuple[list[TensorSpec], list[TensorSpec]]] = {}
        self._specs_lock = threading.Lock()

    def routes(self) -> list[Route]:
        return [
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/v2", self.server_metadata),
            Route("/v2/models/{name}", self.model_metadata),
            Route("/v2/models/{name}/versions/1", self.model_metadata),
            Route("/v2/models/{name}/ready", self.model_ready),
            Route("/v2/models/{name}/versions/1/ready", self.model_ready),
            Route("/v2/models/{name}/infer", self.infer, methods=["POST"]),
            Route("/v2/models/{name}/versions/1/infer", self.infer, methods=["POST"]),
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
            Route("/v2/repository/models/{name}/load", self.load, methods=["POST"]),
            Route("/v2/repository/models/{name}/unload", self.unload, methods=["POST"]),
            Route("/metrics", self.prometheus),
        ]

    def specs(self, name: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
        with self._specs_lock:
            if name in self._specs:
                return self._specs[name]
        found = self.cache.specs(name)
        with self._specs_lock:
            self._specs[name] = found
        return found

    def known(self, name: str) -> bool:
        try:
            self.cache.bundle_of(name)
        except UserInputError:
            return False
        return True

    # health and metadata --------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(
            {
                "name": "fusedinf-cc",
                "version": __version__,
                "extensions": ["binary_tensor_data", "model_repository"],
            }
        )

    async def model_metadata(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.known(name):
            return _error(404, f"unknown model {name!r}")
        refreshed = await self._refresh(name)
        if refreshed is not None:
            return refreshed
        inputs, outputs = await run_in_threadpool(self.specs, name)
        return JSONResponse(
            {
                "name": name,
                "versions": ["1"],
                "platform": f"fusedinf_{self.config.runtime}",
                "inputs": [tensor_metadata(s) for s in inputs],
                "outputs": [tensor_metadata(s) for s in outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.known(name) or self.cache.bundle_of(name) in self.unloaded:
            return _error(400 if self.known(name) else 404, f"model {name!r} is not ready")
        return Response(status_code=200)

    # inference ------------------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        """Answer one request and record its outcome once: by model (unknown names under one
        label, so that labels stay bounded), success with its seconds, or failure."""
        name = request.path_params["name"]
        label = name if self.known(name) else UNKNOWN_LABEL
        started = time.perf_counter()
        try:
            response = await self._answer(request, name)
        except BaseException:
            self.metrics.observe(label, "failure", 0.0)
            raise
        succeeded = response.status_code == 200
        seconds = time.perf_counter() - started if succeeded else 0.0
        self.metrics.observe(label, "success" if succeeded else "failure", seconds)
        return response

    async def _refresh(self, name: str) -> Response | None:
        """Register `name`'s bundle again where its dist was rebuilt in place, so that its
        metadata, inputs and weights are the new build's; an error response where the new
        build cannot be registered, or no longer has `name`."""
        if not self.cache.files_moved(name):  # a stat per file: the common case stays here
            return None
        try:
            if await run_in_threadpool(self.cache.refresh, name):
                with self._specs_lock:
                    self._specs.clear()
        except FusedInfError as error:
            return _error(400, str(error))
        return None if self.known(name) else _error(404, f"unknown model {name!r}")

    async def _answer(self, request: Request, name: str) -> Response:
        if not self.known(name):
            return _error(404, f"unknown model {name!r}")
        refreshed = await self._refresh(name)
        if refreshed is not None:
            return refreshed
        if self.cache.bundle_of(name) in self.unloaded:
            return _error(400, f"model {name!r} is unloaded; load it first")
        config = self.config
        try:
            declared = int(request.headers.get("content-length") or 0)
            json_length = int(request.headers.get(HEADER_LENGTH.lower()) or declared)
        except ValueError:
            return _error(400, f"Content-Length or {HEADER_LENGTH} is not a number")
        refused = _over_limits(config, declared, min(json_length, declared))
        if refused is not None:
            return refused
        header = request.headers.get(HEADER_LENGTH.lower())
        limit, json_limit = config.max_body_bytes, config.max_json_bytes
        chunked_json = "content-length" not in request.headers and header is None
        if "content-length" in request.headers:
            limit, json_limit = declared, min(json_length, declared)
        elif chunked_json:  # no larger than a JSON body may be, stopped as it passes that
            limit = json_limit
        # A chunked body is reserved at the most it may be: its size is known only once read.
        reserved = InflightMemory.estimate(limit, min(json_limit, limit))
        if not self.inflight.reserve(reserved):
            return _error(503, "too many requests in flight; retry", headers={"Retry-After": "1"})
        try:
            try:
                body = await _read_limited(request, limit, config.body_timeout_s)
            except TimeoutError:
                return _error(408, f"the body stopped arriving for {config.body_timeout_s:g} s")
            if body is None and chunked_json:
                return _error(413, f"JSON body over {config.max_json_bytes} bytes; {_BINARY}")
            if body is None:
                return _error(413, f"request body over {limit} bytes")
            try:
                inputs, outputs = await run_in_threadpool(self.specs, name)
                parsed = parse_request(body, header, inputs)
                output_names = {s.name for s in outputs}
                unknown = [o for o in parsed.outputs or () if o not in output_names]
                if unknown:
                    raise ProtocolError(f"unknown outputs {unknown}")
                del body
                results = await run_in_threadpool(
                    self.cache.run, name, parsed.inputs, parsed.outputs
                )
                payload, header_length = encode_response(name, results, parsed)
            except (ProtocolError, FusedInfError) as error:
                return _error(400, str(error))
        finally:
            self.inflight.release(reserved)
        headers = {HEADER_LENGTH: str(header_length)} if header_length is not None else {}
        media = "application/octet-stream" if header_length is not None else "application/json"
        return Response(payload, headers=headers, media_type=media)

    # repository -----------------------------------------------------------------------------
    async def repository_index(self, request: Request) -> Response:
        resident = set(self.cache.resident())
        return JSONResponse(
            [
                {
                    "name": bundle,
                    "version": "1",
                    "state": "UNAVAILABLE" if bundle in self.unloaded else "READY",
                    "reason": "unloaded" if bundle in self.unloaded else "",
                    "resident": bundle in resident,
                    "models": models,
                }
                for bundle, models in self.cache.names().items()
            ]
        )

    async def load(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.known(name):
            return _error(404, f"unknown model {name!r}")
        try:
            await run_in_threadpool(self.cache.load, name)
        except FusedInfError as error:
            return _error(400, str(error))
        self.unloaded.discard(self.cache.bundle_of(name))
        return JSONResponse({})

    async def unload(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not self.known(name):
            return _error(404, f"unknown model {name!r}")
        self.unloaded.add(self.cache.bundle_of(name))
        await run_in_threadpool(self.cache.unload, name)
        return JSONResponse({})

    async def prometheus(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.text(self.cache), media_type="text/plain")


def create_app(config: ServeConfig, cache: BundleCache | None = None) -> Starlette:
    """The ASGI app; `cache` defaults to a new BundleCache over every bundle in `config.dist`."""
    if cache is None:
        cache = BundleCache(
            config.budget_bytes,
            config.policy,
            runtime=config.runtime,
            keep_page_cache=config.keep_page_cache,
            loading=config.loading,
            prefetch=config.prefetch,
        )
        names = register_dist(cache, config.dist, config.runtime)
        if config.open_ahead:
            for name in names:
                cache.open_ahead(name)
    service = Service(config, cache)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        cache.close()  # after uvicorn has let in-flight requests finish

    app = Starlette(
        routes=service.routes(),
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.cache = cache
    return app


def app_from_environment() -> Starlette:
    """For `uvicorn --factory` with several workers: the config travels in the environment."""
    from fusedinf_cc.serve.connections import GuardedH11Protocol, quiet_repeats

    config = ServeConfig.from_env(os.environ["FUSEDINF_SERVE_CONFIG"])
    GuardedH11Protocol.configure(config.header_timeout_s, config.max_connections)
    quiet_repeats()
    return create_app(config)


_BINARY = "send large tensors with the binary data extension"


def _over_limits(config: ServeConfig, body_bytes: int, json_bytes: int) -> Response | None:
    """The 413 for a declared size over the limits, before any of the body is read."""
    if body_bytes > config.max_body_bytes:
        return _error(413, f"request body over {config.max_body_bytes} bytes")
    if json_bytes > config.max_json_bytes:
        return _error(413, f"JSON part over {config.max_json_bytes} bytes; {_BINARY}")
    return None


async def _read_limited(request: Request, limit: int, timeout_s: float) -> bytearray | None:
    """The body, or None past `limit` bytes (stopped there, the rest unread); TimeoutError
    when it stalls for `timeout_s`. One buffer that grows: the body is never held twice, as
    chunks and then joined."""
    body = bytearray()
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout_s)
        except StopAsyncIteration:
            return body
        except asyncio.TimeoutError:
            raise TimeoutError from None
        if len(body) + len(chunk) > limit:
            return None
        body += chunk


async def _http_error(request: Request, error: Exception) -> Response:
    """404, 405 and the like in the protocol's JSON, not Starlette's plain text."""
    assert isinstance(error, HTTPException)
    return _error(error.status_code, str(error.detail), headers=error.headers)


async def _internal_error(request: Request, error: Exception) -> Response:
    logger.error("request %s %s failed: %s", request.method, request.url.path, first_line(error))
    return _error(500, "internal error; the server's log has the cause")


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


__all__ = ["ServeConfig", "Service", "app_from_environment", "create_app", "register_dist"]
