"""The Ray Serve application: a FastAPI ingress in front of the batched model deployment.

    POST /v1/answer   {scene_id | objects, question, situation?, pose?, max_new_tokens?, num_beams?}
                                                                               -> {answer, objects, latency_ms}
    POST /v1/caption  {scene_id, object_id}                                    -> {caption, latency_ms}
    POST /v1/score    {scene_id | objects, question, situation?, pose?, candidates, object_id?} -> {ranked, latency_ms}
    GET  /v1/scenes                                                            -> {scenes}
    GET  /v1/scenes/{scene_id}/points                                          -> {objects: points, colours, boxes}
    GET  /                                                                     -> the interactive web page (3D view)
    GET  /static/three/...                                                     -> three.js, which the page runs on
    GET  /healthz                                                              -> {status}

Bad requests get a 4xx JSON body naming the field and what was expected; the replica goes on
serving. Memory is bounded under load: a body over serve.max_body_bytes gets 413 before it is read,
more than serve.max_total_points uploaded points 422 before pydantic copies them, and past
serve.max_in_flight requests or serve.max_bytes_in_flight body bytes a request gets 503 with
Retry-After. With an API token set (serve.api_token or $CL3DOR_API_TOKEN), every endpoint but
/healthz needs `Authorization: Bearer <token>`, compared in constant time. In-cluster callers
use the same methods (`answer`, `caption`, `score`, `scenes`) through a DeploymentHandle.

`serve run serve_config.yaml` builds it with `app_builder`; `serve.run(build_app(...))` from Python.
"""

# No `from __future__ import annotations` here: FastAPI must see the real `Request` annotation.
import dataclasses
import hmac
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.requests import ClientDisconnect

from cl3dor_ray.config import ServeConfig, from_dict
from cl3dor_ray.serve.model_deployment import Scene3DLMDeployment, UnknownTarget
from cl3dor_ray.serve.schemas import (
    AnswerRequest,
    AnswerResponse,
    CaptionRequest,
    CaptionResponse,
    ScoreRequest,
    ScoreResponse,
)

TOKEN_ENV = "CL3DOR_API_TOKEN"
PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
# three.js from npm (`make web`, which `make demo` and `make test` run), served by the app itself: the page
# works offline and behind the token
WEB = Path(__file__).parent / "web"
INSTALL_WEB = "make web (npm ci --prefix cl3dor_ray/serve/web)"
logger = logging.getLogger("ray.serve")


def static_files(web: Path) -> dict[str, Path]:
    """The page's library files under a web folder (its node_modules): a fixed list, never a request's path."""
    three = web / "node_modules" / "three"
    return {
        "three.module.js": three / "build" / "three.module.js",
        "three.core.js": three / "build" / "three.core.js",
        "addons/OrbitControls.js": three / "examples" / "jsm" / "controls" / "OrbitControls.js",
    }


def page_without_three(missing: list[Path]) -> str:
    """The page, saying in place of its 3D view why there is none (its script cannot load without three.js)."""
    note = (
        f'<p id="no-three" class="error">The 3D view needs three.js, which is not installed here '
        f"({missing[0]} is missing): run <code>{INSTALL_WEB}</code> and restart the server.</p>"
    )
    return PAGE.replace('<div id="view">', note + '<div id="view">', 1)


api = FastAPI(title="cl3dor", description="CL3DOR 3D LMM: answers, captions and answer scores for 3D scenes")


class RequestError(Exception):
    """A request the app refuses: an HTTP status and a JSON body that says why."""

    def __init__(self, status: int, body: dict, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers
        super().__init__(f"{status}: {body}")

    def __reduce__(self):  # crosses process boundaries through a DeploymentHandle
        return type(self), (self.status, self.body, self.headers)


# what a DeploymentHandle call raises when the replica serving it dies or cannot be reached
LOST_REPLICA = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
UNAUTHORISED = JSONResponse(
    {"error": "unauthorised", "detail": "expected header Authorization: Bearer <token>"}, status_code=401
)


def _validation_error(e: ValidationError) -> RequestError:
    fields = [{"field": ".".join(str(p) for p in err["loc"]) or "(body)", "problem": err["msg"]} for err in e.errors()]
    return RequestError(422, {"error": "invalid request", "fields": fields})


class Admission:
    """Admission control of one ingress replica (one event loop, so plain counters are safe)."""

    def __init__(self, limits: ServeConfig):
        self.limits = limits
        self.requests = 0
        self.bytes = 0

    def admit(self, content_length: str | None) -> int:
        """The body's declared size, counted in flight: 413 for a body over serve.max_body_bytes, 503 with
        Retry-After when the replica already holds serve.max_in_flight requests or serve.max_bytes_in_flight
        bytes of bodies (it answers those first, rather than run out of memory)."""
        lim = self.limits
        try:
            size = int(content_length or 0)
        except ValueError:
            raise RequestError(400, {"error": "bad Content-Length header", "detail": repr(content_length)}) from None
        if size > lim.max_body_bytes:
            raise RequestError(
                413,
                {
                    "error": "request too large",
                    "detail": f"{size} bytes; at most {lim.max_body_bytes} (serve.max_body_bytes)",
                },
            )
        if self.requests >= lim.max_in_flight or self.bytes + size > lim.max_bytes_in_flight:
            raise RequestError(
                503,
                {
                    "error": "busy",
                    "detail": f"{self.requests} requests and {self.bytes} bytes in flight; retry shortly",
                },
                headers={"Retry-After": "1"},
            )
        self.requests += 1
        self.bytes += size
        return size

    def release(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size


def _compact(req: BaseModel) -> dict:
    """The request for the model replica, uploaded clouds as float32 arrays: a tenth of the memory of
    lists of Python floats, and one buffer to pickle across processes."""
    body = req.model_dump(exclude={"objects"})
    objects = getattr(req, "objects", None)
    body["objects"] = (
        None
        if objects is None
        else [
            {
                "points": np.asarray(o.points, np.float32),
                "label": o.label,
                "colors": None if o.colors is None else np.asarray(o.colors, np.float32),
            }
            for o in objects
        ]
    )
    return body


@serve.deployment(max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.1})  # routing and validation only
@serve.ingress(api)
class Cl3dorIngress:
    def __init__(
        self, model: DeploymentHandle, limits: ServeConfig, api_token: str | None = None, web_dir: str | None = None
    ):
        self.model = model
        self.limits = limits
        self.context = {"limits": limits}  # what the request models validate against (schemas.py)
        self.token = os.environ.get(TOKEN_ENV) or api_token
        self.admission = Admission(limits)
        self.static = static_files(Path(web_dir) if web_dir else WEB)
        missing = [p for p in self.static.values() if not p.is_file()]
        self.page_html = page_without_three(missing) if missing else PAGE
        if missing:
            logger.warning("the page's 3D view needs three.js, which is missing (%s): run %s", missing[0], INSTALL_WEB)

    # ---- the methods, shared by HTTP and DeploymentHandle callers
    def _parse(self, model: type[BaseModel], payload: Any) -> BaseModel:
        if not isinstance(payload, dict):
            raise RequestError(
                422,
                {
                    "error": "invalid request",
                    "fields": [{"field": "(body)", "problem": f"expected a JSON object, got {type(payload).__name__}"}],
                },
            )
        objects = payload.get("objects")
        if isinstance(objects, list):  # before pydantic copies them: the total is what costs memory
            total = sum(len(o["points"]) for o in objects if isinstance(o, dict) and isinstance(o.get("points"), list))
            if total > self.limits.max_total_points:
                raise RequestError(
                    422,
                    {
                        "error": "invalid request",
                        "fields": [
                            {
                                "field": "objects",
                                "problem": f"{total} points in all; at most {self.limits.max_total_points} "
                                "per request (serve.max_total_points)",
                            }
                        ],
                    },
                )
        try:
            return model.model_validate(payload, context=self.context)
        except ValidationError as e:
            raise _validation_error(e) from None

    async def _call(self, method: str, request: dict):
        try:
            return await getattr(self.model, method).remote(request)
        except UnknownTarget as e:
            raise RequestError(404, {"error": "not found", "field": e.field, "detail": e.detail}) from None
        except LOST_REPLICA as e:  # the replica died under the request: Serve starts another, so come back
            raise RequestError(
                503,
                {
                    "error": "model replica lost",
                    "detail": f"{type(e).__name__}: the replica serving this request stopped; retry shortly",
                },
                headers={"Retry-After": "2"},
            ) from None

    async def answer(self, payload: dict) -> dict:
        t = time.perf_counter()
        req = self._parse(AnswerRequest, payload)
        body = _compact(req)
        body["max_new_tokens"] = req.max_new_tokens or self.limits.default_new_tokens
        out = await self._call("generate", body)
        return AnswerResponse(
            answer=out["text"], objects=out["objects"], latency_ms=1000 * (time.perf_counter() - t)
        ).model_dump()

    async def caption(self, payload: dict) -> dict:
        t = time.perf_counter()
        req = self._parse(CaptionRequest, payload)
        body = {**req.model_dump(), "max_new_tokens": req.max_new_tokens or self.limits.default_new_tokens}
        out = await self._call("generate", body)
        return CaptionResponse(caption=out["text"], latency_ms=1000 * (time.perf_counter() - t)).model_dump()

    async def score(self, payload: dict) -> dict:
        t = time.perf_counter()
        req = self._parse(ScoreRequest, payload)
        ranked = await self._call("score", _compact(req))
        return ScoreResponse(ranked=ranked, latency_ms=1000 * (time.perf_counter() - t)).model_dump()

    async def scenes(self) -> dict:
        return {"scenes": await self.model.scenes.remote()}

    # ---- HTTP
    def _authorised(self, request: Request) -> bool:
        if not self.token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode())

    async def _http(self, request: Request, method) -> JSONResponse:
        if not self._authorised(request):
            return UNAUTHORISED
        try:
            size = self.admission.admit(request.headers.get("content-length"))
        except RequestError as e:
            return await self._refuse(request, e)
        try:
            payload = None
            if request.method == "POST":
                try:
                    raw = await self._body(request)
                except RequestError as e:  # a chunked body past the limit: the rest is still coming
                    return await self._refuse(request, e)
                try:
                    payload = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise RequestError(400, {"error": "malformed JSON", "detail": str(e)}) from None
                del raw
            return JSONResponse(await (method(payload) if payload is not None else method()))
        except RequestError as e:
            return JSONResponse(e.body, status_code=e.status, headers=e.headers)
        finally:
            self.admission.release(size)

    async def _refuse(self, request: Request, e: RequestError) -> JSONResponse:
        """Answer a refused request (413, 503) only after reading and dropping its body, up to
        serve.max_drain_bytes: a client still sending would otherwise see its connection reset, not the
        answer and its message. A body larger than that is cut off, and the connection closed."""
        drained, headers = 0, dict(e.headers or {})
        try:
            async for chunk in request.stream():
                drained += len(chunk)
                if drained > self.limits.max_drain_bytes:
                    headers["Connection"] = "close"
                    break
        except (ClientDisconnect, RuntimeError):  # gone, or the whole body was read already
            pass
        return JSONResponse(e.body, status_code=e.status, headers=headers)

    async def _body(self, request: Request) -> bytes:
        """The body, read no further than serve.max_body_bytes (a chunked body declares no length)."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise RequestError(
                    413,
                    {
                        "error": "request too large",
                        "detail": f"over {self.limits.max_body_bytes} bytes (serve.max_body_bytes)",
                    },
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @api.post("/v1/answer", response_model=AnswerResponse)
    async def http_answer(self, request: Request):
        return await self._http(request, self.answer)

    @api.post("/v1/caption", response_model=CaptionResponse)
    async def http_caption(self, request: Request):
        return await self._http(request, self.caption)

    @api.post("/v1/score", response_model=ScoreResponse)
    async def http_score(self, request: Request):
        return await self._http(request, self.score)

    @api.get("/v1/scenes")
    async def http_scenes(self, request: Request):
        return await self._http(request, self.scenes)

    @api.get("/v1/scenes/{scene_id}/points")
    async def http_scene_points(self, scene_id: str, request: Request):
        if not self._authorised(request):
            return UNAUTHORISED
        try:
            return JSONResponse(await self.model.scene_points.remote(scene_id))
        except UnknownTarget as e:
            return JSONResponse({"error": "not found", "field": e.field, "detail": e.detail}, status_code=404)

    @api.get("/static/three/{name:path}")
    async def static_three(self, name: str):
        """The page's library files (public, like the page): a fixed list, never a path from the request."""
        path = self.static.get(name)
        if path is None:
            return JSONResponse({"error": "not found", "detail": f"no static file {name!r}"}, status_code=404)
        if not path.is_file():
            return JSONResponse(
                {"error": "three.js is not installed", "detail": f"{path} is missing; run {INSTALL_WEB}"},
                status_code=503,
            )
        return FileResponse(path, media_type="text/javascript")

    @api.get("/", response_class=HTMLResponse)
    async def page(self):
        """The interactive page: static, so it needs no token; its calls carry the one typed into it."""
        return HTMLResponse(self.page_html)

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}


def build_app(model_dir: str, data_dir: str, serve_cfg: "ServeConfig | None" = None, web_dir: str | None = None):
    """`web_dir`: where the page's three.js is installed (default: the package's own web/ folder)."""
    cfg = serve_cfg or ServeConfig()
    model = Scene3DLMDeployment.bind(
        model_dir, data_dir, cfg.max_batch_size, cfg.batch_wait_timeout_s, cfg.prefix_cache_mb
    )
    # the typed config crosses to the replica as it is; the token travels on its own, once
    return Cl3dorIngress.bind(model, dataclasses.replace(cfg, api_token=None), cfg.api_token, web_dir)


def app_builder(args: dict):
    """For `serve run serve_config.yaml`: args are model_dir, data_dir and any serve: config keys."""
    args = dict(args)
    missing = [k for k in ("model_dir", "data_dir") if k not in args]
    if missing:
        raise ValueError(f"serve_config.yaml application args need {missing}")
    model_dir, data_dir = args.pop("model_dir"), args.pop("data_dir")
    return build_app(model_dir, data_dir, from_dict(ServeConfig, args, "serve"))
