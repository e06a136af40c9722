"""The HTTP service (FastAPI): `POST /recommend`, `GET /items/{id}`, `GET /health`, OpenAPI at /docs.

Every request is checked before it reaches the model (types and unknown fields by the schema, k and
the sizes by range, unknown item ids by the catalogue) and answered with a 4xx naming the problem;
bodies over `max_body_bytes` are refused while they are read (413). Valid requests go through the
`MicroBatcher`, so concurrent requests share one forward pass.
"""

# no `from __future__ import annotations`: FastAPI reads the request model from the live annotation
import contextlib
from typing import Literal, Union

from ..errors import MmesidError
from .batching import MicroBatcher
from .recommender import Recommender

Id = Union[str, int]


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, by its Content-Length or, for a streamed
    body, as soon as the bytes read pass the limit (the body is read here, then handed on whole)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(send, self.limit)
        chunks, seen, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunks.append(msg.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await _too_large(send, self.limit)
            more = msg.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send, limit: int) -> None:
    import json

    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _schemas(max_histories: int, max_history_len: int):
    from pydantic import BaseModel, ConfigDict, Field

    class RecommendRequest(BaseModel):
        """Exactly one of `history`, `histories` or `user_id`."""

        model_config = ConfigDict(extra="forbid")
        history: list[Id] | None = Field(None, max_length=max_history_len, description="item ids, oldest first")
        histories: list[list[Id]] | None = Field(None, max_length=max_histories)
        user_id: str | None = Field(None, description="a known user: their whole sequence is the history")
        k: int = Field(10, ge=1, description="items to return (at most the catalogue size)")
        exclude_history: bool = True
        unknown: Literal["error", "drop"] = "error"

    return RecommendRequest


def _histories(req, rec: Recommender, max_history_len: int) -> list[list[str]] | None:
    given = [x is not None for x in (req.history, req.histories, req.user_id)]
    if sum(given) != 1:
        raise MmesidError("give exactly one of 'history', 'histories' or 'user_id'")
    if req.k > rec.n_items:
        raise MmesidError(f"k must be between 1 and {rec.n_items} (the catalogue), got {req.k}")
    if req.user_id is not None:
        return None
    hs = [req.history] if req.history is not None else req.histories
    for h in hs:
        if len(h) > max_history_len:
            raise MmesidError(f"a history has {len(h)} items; at most {max_history_len} are accepted")
    return [[str(x) for x in h] for h in hs]


def _score_batch(rec: Recommender):
    """The batcher's function: work items (item numbers, k, exclude) -> (item numbers, scores, fallback)."""

    def run(items: list[tuple[list[int], int, bool]]):
        kmax = max(k for _, k, _ in items)
        idx, val, empty = rec.top_k([h for h, _, _ in items], kmax, [e for _, _, e in items])
        return [(idx[i, :k], val[i, :k], empty[i]) for i, (_, k, _) in enumerate(items)]

    return run


def create_app(rec: Recommender, max_batch: int = 64, max_wait_ms: float = 5.0, max_body_bytes: int = 1 << 20,
               max_histories: int = 256, max_history_len: int = 1000):
    """The FastAPI application serving `rec` (run it with uvicorn: `mmesid serve`)."""
    from fastapi import FastAPI, HTTPException

    batcher = MicroBatcher(_score_batch(rec), max_batch=max_batch, max_wait_ms=max_wait_ms)
    Request = _schemas(max_histories, max_history_len)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="mmesid", description=f"recommendations of {rec.kind} run {rec.name}", lifespan=lifespan)
    app.state.batcher = batcher

    @app.post("/recommend")
    async def recommend(req: Request):  # type: ignore[valid-type]
        try:
            hs = _histories(req, rec, max_history_len)
            if hs is None:
                mapped = [(list(rec.user_history(req.user_id)), [])]
            else:
                mapped = [rec.item_numbers(h, req.unknown) for h in hs]
        except MmesidError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        out = await batcher.submit([(m[0], req.k, req.exclude_history) for m in mapped])
        recs = [rec.results(idx.unsqueeze(0), val.unsqueeze(0), [empty], [dropped])[0]
                for (idx, val, empty), (_, dropped) in zip(out, mapped)]
        return {"model": rec.kind, "recommendations": [r.as_dict() for r in recs]}

    @app.get("/items/{item_id}")
    async def item(item_id: str):
        try:
            return rec.item(item_id)
        except MmesidError as e:
            raise HTTPException(status_code=404, detail=str(e)) from None

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": rec.kind, "run": rec.name, "items": rec.n_items,
                "users": rec.data.n_users, "batches": batcher.batches, "histories_scored": batcher.items}

    return BodyLimit(app, max_body_bytes)

