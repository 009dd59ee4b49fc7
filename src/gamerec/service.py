"""The HTTP service: FastAPI over one `Recommender`, loaded once when the service starts.

    GET /recommend?user=ID&k=10   the user's top k (unknown user: the popularity list, labelled)
    GET /similar?item=ASIN&k=10   the games nearest to a game (unknown ASIN: 404)
    GET /health                   model version, index kind, catalogue size

Every answer carries the model version that produced it, in the body and in the
`X-Model-Version` header (422 validation errors included). Bound to 127.0.0.1 unless told
otherwise: there is no authentication.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from gamerec import __version__
from gamerec.recommender import MAX_K, Recommender, UnknownItem

K = Query(10, ge=1, le=MAX_K, description=f"how many games, 1 to {MAX_K}")


def create_app(recommender: Recommender) -> "_VersionHeader":
    """The service's routes over an already loaded `recommender`, as an ASGI app that adds `X-Model-Version`.

    The routes are `async def` though they compute: a query is a sub-millisecond search,
    cheaper than the hop to a worker thread that a plain `def` route costs (3x the
    requests per second in bench/serve.py).
    """
    app = FastAPI(title="gamerec", version=__version__,
                  description="Video game recommendations from the two-tower model the export stage wrote.")

    @app.get("/health")
    async def health() -> dict:
        return recommender.health()

    @app.get("/recommend")
    async def recommend(user: str = Query(..., min_length=1, max_length=200, description="reviewer id"), k: int = K) -> dict:
        return recommender.recommend(user, k)

    @app.get("/similar")
    async def similar(item: str = Query(..., min_length=1, max_length=200, description="ASIN"), k: int = K):
        try:
            return recommender.similar(item, k)
        except UnknownItem as exc:
            return JSONResponse({"detail": str(exc), "model_version": recommender.model_version}, status_code=404)

    return _VersionHeader(app, recommender.model_version)


class _VersionHeader:
    """ASGI wrapper adding `X-Model-Version` to every response (errors too); plain ASGI, no per-request task."""

    def __init__(self, app, version: str):
        self.app, self.header = app, (b"x-model-version", version.encode())

    async def __call__(self, scope, receive, send):
        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header if scope["type"] == "http" else send)


def serve(models_dir: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load the exported model once, then serve it with uvicorn until interrupted."""
    recommender = Recommender(models_dir)  # a bad folder stops here, before the port is bound
    health = recommender.health()
    print(f"gamerec: serving model {recommender.model_version[:12]} ({health['items']} games, "
          f"{health['index']} index) on http://{host}:{port}", flush=True)
    uvicorn.run(create_app(recommender), host=host, port=port, log_level="warning")
