"""The HTTP service: FastAPI over the newest export, typed by `gamerec.api`, under the `/v1` prefix.

    GET  /v1/recommend?user=ID&k=10            a known user's top k (unknown user: the popularity list, labelled)
    GET  /v1/recommend?items=ASIN,ASIN&k=10    the top k after a list of games, oldest first
         ... &platform=&brand=&min_price=&max_price=&exclude=ASIN,ASIN   filters, for either
    POST /v1/recommend  {"queries": [...]}      up to MAX_BATCH such questions in one call
    GET  /v1/similar?item=ASIN&k=10             the games nearest to a game
    GET  /v1/health                             model version, index kind, catalogue size, platforms

Errors are one JSON shape, `{"detail": "<one line>", "model_version"}`: 404 for an ASIN not in
the catalogue (or an unknown route), 413 for a body over MAX_BODY_BYTES, 422 for any other
bad question. Every response carries the model version that answered it in the
`X-Model-Version` header, and leaves one access line (method, path, status, ms) on stderr.
The unprefixed routes of earlier versions are gone. Bound to 127.0.0.1 unless told
otherwise: there is no authentication.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gamerec import __version__, api
from gamerec.errors import GamerecError
from gamerec.recommender import MAX_K, Recommender, UnknownItem
from gamerec.reload import LiveExport

MAX_BODY_BYTES = 8 << 20  # a batch at its limits (1000 questions of 1000 games) is larger: split it
MAX_REQUEST_LINE = 256 << 10  # uvicorn's (h11's) cap on a request's head, so that a long ?items= list reaches us
SCOPE_KEY = "gamerec.recommender"  # the export a request is answered from, set when the request arrives
ERRORS = {status: {"model": api.Error, "description": text} for status, text in (
    (404, "an ASIN that is not in the catalogue"),
    (422, "a bad question: the detail names the parameter and what was expected"))}
K = Query(10, ge=1, le=MAX_K, description=f"how many games, 1 to {MAX_K}")


async def answering(request: Request) -> Recommender:
    """The export this request is answered from (an `async` dependency: no hop to a worker thread)."""
    return request.scope[SCOPE_KEY]


Answering = Annotated[Recommender, Depends(answering)]


def routes() -> APIRouter:
    """The `/v1` routes. They are `async def` though they compute: a query is a sub-millisecond
    search, cheaper than the hop to a worker thread that a plain `def` route costs (3x the
    requests per second in bench/serve.py)."""
    router = APIRouter(prefix="/v1")

    @router.get("/health", response_model=api.Health)
    async def health(recommender: Answering) -> dict:
        return recommender.health()

    @router.get("/recommend", response_model=api.Answer, responses=ERRORS)
    async def recommend(question: Annotated[api.Question, Query()], recommender: Answering) -> dict:
        return recommender.recommend_many([question.model_dump()])[0]

    @router.post("/recommend", response_model=api.BatchAnswer,
                 responses={**ERRORS, 413: {"model": api.Error, "description": f"a body over {MAX_BODY_BYTES} bytes"}})
    async def recommend_batch(batch: api.Batch, recommender: Answering) -> dict:
        answers = recommender.recommend_many([question.model_dump() for question in batch.queries])
        return {"model_version": recommender.model_version, "answers": answers}

    @router.get("/similar", response_model=api.SimilarAnswer, responses=ERRORS)
    async def similar(recommender: Answering, item: str = Query(..., min_length=1, max_length=200, description="ASIN"),
                      k: int = K) -> dict:
        return recommender.similar(item, k)

    return router


def error(request: Request, status: int, detail: str) -> JSONResponse:
    """The one error shape: a line of detail and the model version."""
    return JSONResponse({"detail": detail, "model_version": request.scope[SCOPE_KEY].model_version}, status)


async def bad_question(request: Request, exc: GamerecError) -> JSONResponse:
    """The recommender's one-line errors: 404 for an ASIN not in the catalogue, 422 for the rest."""
    return error(request, 404 if isinstance(exc, UnknownItem) else 422, str(exc))


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors as one line, `parameter: what was expected; ...`."""
    def where(e: dict) -> str:  # ("query", "k") -> k; ("body", "queries", 0, "items") -> queries.0.items
        return "body" if e["type"] == "json_invalid" else ".".join(map(str, e["loc"][1:])) or e["loc"][0]

    return error(request, 422, "; ".join(f"{where(e)}: {e['msg']}" for e in exc.errors()))


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (an unknown route, a method a route does not take) in the same shape."""
    return error(request, exc.status_code, str(exc.detail))


def create_app(live: LiveExport) -> "_Front":
    """The service's routes over `live`'s current export, behind `_Front` (version header, body limit, access log)."""
    app = FastAPI(title="gamerec", version=__version__,
                  description="Video game recommendations from the two-tower model the export stage wrote.")
    app.include_router(routes())
    for kind, handler in ((GamerecError, bad_question), (RequestValidationError, invalid), (HTTPException, http_error)):
        app.add_exception_handler(kind, handler)
    return _Front(app, live)


class _Front:
    """Plain ASGI in front of the app (no per-request task): the export a request is answered from,
    `X-Model-Version` on every response (errors too), the body limit, and one access line."""

    def __init__(self, app: FastAPI, live: LiveExport):
        self.app, self.live = app, live

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        recommender = scope[SCOPE_KEY] = self.live.current  # the whole request reads this one export
        header = (b"x-model-version", recommender.model_version.encode())
        start, status = time.perf_counter(), [500]

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if length.isdigit() and int(length) > MAX_BODY_BYTES:
                detail = f"request body of {int(length)} bytes; at most {MAX_BODY_BYTES}: split the batch"
                await JSONResponse({"detail": detail, "model_version": recommender.model_version}, 413)(
                    scope, receive, send_with_header)
            else:
                await self.app(scope, receive, send_with_header)
        finally:
            ms = (time.perf_counter() - start) * 1000
            print(f"{scope['method']} {scope['path']} {status[0]} {ms:.1f} ms", file=sys.stderr, flush=True)


def serve(models_dir: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load the export, watch it for new ones (and reload on SIGHUP), and serve it with uvicorn until interrupted."""
    live = LiveExport(models_dir)  # a bad folder stops here, before the port is bound
    health = live.current.health()
    signal.signal(signal.SIGHUP, lambda *_: live.wake())
    live.start()
    print(f"gamerec: serving model {live.current.model_version[:12]} ({health['items']} games, "
          f"{health['index']} index) on http://{host}:{port}; watching {models_dir}/serving.json", flush=True)
    try:
        uvicorn.run(create_app(live), host=host, port=port, log_level="warning",
                    h11_max_incomplete_event_size=MAX_REQUEST_LINE)
    finally:
        live.stop()
