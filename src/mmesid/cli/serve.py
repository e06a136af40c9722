"""`mmesid serve`: an HTTP service (FastAPI + uvicorn) answering recommendations from a trained run."""

from __future__ import annotations

from ..config import arg_number
from ..errors import MmesidError
from .recommend import add_run_args


def register(sub) -> None:
    p = sub.add_parser("serve", help="HTTP service: POST /recommend, GET /items/{id}, GET /health, /docs")
    add_run_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=arg_number(int, ge=0, le=65535), default=8000)
    p.add_argument("--max-batch", type=arg_number(int, ge=1), default=64,
                   help="histories scored together (dynamic micro-batching; 1 = one forward per request)")
    p.add_argument("--max-wait-ms", type=arg_number(float, ge=0), default=5.0,
                   help="how long the first waiting request may wait for others to join its batch")
    p.add_argument("--max-body-bytes", type=arg_number(int, ge=1), default=1 << 20)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise MmesidError("mmesid serve needs fastapi and uvicorn: pip install 'mmesid[serve]'") from None
    from ..serve import Recommender
    from ..serve.app import create_app

    rec = Recommender.load(args.run, args.data, device=args.device or "cpu", threads=args.threads,
                           batch_size=args.batch_size, int8=args.int8)
    app = create_app(rec, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_body_bytes=args.max_body_bytes)
    print(f"serving {rec.kind} run {args.run} ({rec.n_items} items) on http://{args.host}:{args.port} "
          f"(docs: /docs); Ctrl-C stops")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
