"""The KServe v2 / Triton HTTP endpoint on the loader, as a Starlette ASGI app.

Every built bundle of a dist folder is registered with one EngineCache; a request for a bundle
or for a model inside one loads it on demand, evicting idle bundles to stay within the budget.
Inference runs in Starlette's thread pool, so requests for different bundles run concurrently and
the cache's own locking keeps one load per bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fusedinf_cc import __version__
from fusedinf_cc.artifacts.index import index_path, read_index
from fusedinf_cc.backends.base import TensorSpec
from fusedinf_cc.backends.runtimes import DEFAULT_RUNTIME, TENSORRT
from fusedinf_cc.common.errors import FusedInfError, UserInputError
from fusedinf_cc.runtime.loader import EngineCache
from fusedinf_cc.serve.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    encode_response,
    parse_request,
    tensor_metadata,
)

DEFAULT_MAX_BODY_BYTES = 64 * 2**20
UNKNOWN_LABEL = "(unknown)"
_ARTIFACT_PREFERENCE = {TENSORRT: ("engine",), DEFAULT_RUNTIME: ("onnx", "ort")}


@dataclass(frozen=True)
class ServeConfig:
    dist: Path
    budget_bytes: int
    policy: str = "gdsf"
    runtime: str = DEFAULT_RUNTIME
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def to_env(self) -> str:
        return json.dumps(
            {
                "dist": str(self.dist),
                "budget_bytes": self.budget_bytes,
                "policy": self.policy,
                "runtime": self.runtime,
                "max_body_bytes": self.max_body_bytes,
            }
        )

    @classmethod
    def from_env(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        return cls(**{**data, "dist": Path(data["dist"])})


@dataclass
class Metrics:
    """Counters for /metrics; the loader's own stats are read when scraped."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, model: str, outcome: str, seconds: float) -> None:
        with self.lock:
            key = (model, outcome)
            self.requests[key] = self.requests.get(key, 0) + 1
            if outcome == "success":
                self.seconds[model] = self.seconds.get(model, 0.0) + seconds


def register_dist(cache: EngineCache, dist: Path, runtime: str) -> list[str]:
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
        cache.register(index_path(folder, chosen), name=index["name"])
        names.append(index["name"])
    if not names:
        raise UserInputError(f"{dist}: no built bundles for {runtime} (run `bundle build`)")
    return names


def create_app(config: ServeConfig, cache: EngineCache | None = None) -> Starlette:
    """The ASGI app; `cache` defaults to a new EngineCache over every bundle in `config.dist`."""
    if cache is None:
        cache = EngineCache(config.budget_bytes, config.policy, runtime=config.runtime)
        register_dist(cache, config.dist, config.runtime)
    metrics = Metrics()
    unloaded: set[str] = set()  # bundles unloaded through the repository API: not ready
    spec_cache: dict[str, tuple[list[TensorSpec], list[TensorSpec]]] = {}
    spec_lock = threading.Lock()

    def specs(name: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
        with spec_lock:
            if name in spec_cache:
                return spec_cache[name]
        found = cache.specs(name)
        with spec_lock:
            spec_cache[name] = found
        return found

    def known(name: str) -> bool:
        try:
            cache.bundle_of(name)
        except UserInputError:
            return False
        return True

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "fusedinf-cc",
                "version": __version__,
                "extensions": ["binary_tensor_data", "model_repository"],
            }
        )

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["name"]
        if not known(name):
            return _error(404, f"unknown model {name!r}")
        inputs, outputs = await run_in_threadpool(specs, name)
        return JSONResponse(
            {
                "name": name,
                "versions": ["1"],
                "platform": f"fusedinf_{config.runtime}",
                "inputs": [tensor_metadata(s) for s in inputs],
                "outputs": [tensor_metadata(s) for s in outputs],
            }
        )

    async def model_ready(request: Request) -> Response:
        name = request.path_params["name"]
        if not known(name) or cache.bundle_of(name) in unloaded:
            return _error(400 if known(name) else 404, f"model {name!r} is not ready")
        return Response(status_code=200)

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        started = time.perf_counter()
        if not known(name):
            metrics.observe(UNKNOWN_LABEL, "failure", 0.0)  # not the name: labels stay bounded
            return _error(404, f"unknown model {name!r}")
        if cache.bundle_of(name) in unloaded:
            metrics.observe(name, "failure", 0.0)
            return _error(400, f"model {name!r} is unloaded; load it first")
        declared = int(request.headers.get("content-length") or 0)
        if declared > config.max_body_bytes:
            metrics.observe(name, "failure", 0.0)
            return _error(413, f"request body over {config.max_body_bytes} bytes")
        body = await _read_limited(request, config.max_body_bytes)
        if body is None:
            metrics.observe(name, "failure", 0.0)
            return _error(413, f"request body over {config.max_body_bytes} bytes")
        try:
            inputs, outputs = await run_in_threadpool(specs, name)
            parsed = parse_request(body, request.headers.get(HEADER_LENGTH.lower()), inputs)
            output_names = {s.name for s in outputs}
            unknown = [o for o in parsed.outputs or () if o not in output_names]
            if unknown:
                raise ProtocolError(f"unknown outputs {unknown}")
            results = await run_in_threadpool(cache.run, name, parsed.inputs, parsed.outputs)
            payload, header_length = encode_response(name, results, parsed)
        except (ProtocolError, FusedInfError) as error:
            metrics.observe(name, "failure", 0.0)
            return _error(400, str(error))
        metrics.observe(name, "success", time.perf_counter() - started)
        headers = {HEADER_LENGTH: str(header_length)} if header_length is not None else {}
        media = "application/octet-stream" if header_length is not None else "application/json"
        return Response(payload, headers=headers, media_type=media)

    async def repository_index(request: Request) -> Response:
        resident = set(cache.resident())
        return JSONResponse(
            [
                {
                    "name": bundle,
                    "version": "1",
                    "state": "UNAVAILABLE" if bundle in unloaded else "READY",
                    "reason": "unloaded" if bundle in unloaded else "",
                    "resident": bundle in resident,
                    "models": models,
                }
                for bundle, models in cache.names().items()
            ]
        )

    async def load(request: Request) -> Response:
        name = request.path_params["name"]
        if not known(name):
            return _error(404, f"unknown model {name!r}")
        try:
            await run_in_threadpool(cache.load, name)
        except FusedInfError as error:
            return _error(400, str(error))
        unloaded.discard(cache.bundle_of(name))
        return JSONResponse({})

    async def unload(request: Request) -> Response:
        name = request.path_params["name"]
        if not known(name):
            return _error(404, f"unknown model {name!r}")
        bundle = cache.bundle_of(name)
        unloaded.add(bundle)
        await run_in_threadpool(cache.unload, name)
        return JSONResponse({})

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(_metrics_text(metrics, cache), media_type="text/plain")

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/versions/1", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/1/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/1/infer", infer, methods=["POST"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
        Route("/metrics", prometheus),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        cache.close()  # after uvicorn has let in-flight requests finish

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.cache = cache
    return app


def app_from_environment() -> Starlette:
    """For `uvicorn --factory` with several workers: the config travels in the environment."""
    return create_app(ServeConfig.from_env(os.environ["FUSEDINF_SERVE_CONFIG"]))


async def _read_limited(request: Request, limit: int) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _number(value: float) -> str:
    """Exact for counts and bytes, full precision for seconds."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _metrics_text(metrics: Metrics, cache: EngineCache) -> str:
    stats = cache.stats
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    with metrics.lock:
        requests = sorted(metrics.requests.items())
        seconds = sorted(metrics.seconds.items())
    metric(
        "fusedinf_requests_total",
        "counter",
        "Inference requests by model and outcome.",
        [(f'{{model="{m}",outcome="{o}"}}', n) for (m, o), n in requests],
    )
    metric(
        "fusedinf_request_seconds_total",
        "counter",
        "Seconds spent on successful requests (swaps included), by model.",
        [(f'{{model="{m}"}}', s) for m, s in seconds],
    )
    metric("fusedinf_loads_total", "counter", "Bundle loads (misses).", [("", stats.misses)])
    metric("fusedinf_evictions_total", "counter", "Bundles evicted.", [("", stats.evictions)])
    metric(
        "fusedinf_loading_seconds_total",
        "counter",
        "Seconds spent loading bundles.",
        [("", stats.seconds_loading)],
    )
    metric(
        "fusedinf_resident_bytes",
        "gauge",
        "Footprint of the resident bundles.",
        [("", cache.accounted_bytes)],
    )
    metric(
        "fusedinf_peak_resident_bytes",
        "gauge",
        "Highest footprint accounted so far.",
        [("", stats.peak_accounted_bytes)],
    )
    metric("fusedinf_budget_bytes", "gauge", "The memory budget.", [("", cache.budget_bytes)])
    return "\n".join(lines) + "\n"


__all__ = ["ServeConfig", "app_from_environment", "create_app", "register_dist"]
