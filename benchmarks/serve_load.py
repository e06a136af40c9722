"""Load test of `mmesid serve` on loopback: requests/s and latency with and without micro-batching.

For each run, a server process is started twice (`--max-batch 64 --max-wait-ms 5`, then
`--max-batch 1 --max-wait-ms 0`: one forward per request), and N concurrent clients (asyncio + httpx,
one process) each send requests of one real history (a test user's sequence without its last item,
in the catalogue's own ids) for a fixed time. Reports requests/s, p50 and p99 latency and the ratio.

    python benchmarks/serve_load.py --run runs/sasrec-beauty --run runs/mme-sid --clients 32 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def histories(run: Path, n: int, seed: int = 0) -> list[list[str]]:
    from mmesid.data.dataset import SequenceData
    from mmesid.io import read_json

    data = SequenceData.load(read_json(run / "run.json")["data"])
    rng = np.random.default_rng(seed)
    users = rng.choice(data.n_users, n, replace=False)
    return [[data.items[i - 1].raw_id for i in data.sequences[u][:-1]] for u in users]


def start_server(run: Path, port: int, max_batch: int, wait_ms: float, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mmesid.cli", "serve", "--run", str(run), "--port", str(port),
           "--max-batch", str(max_batch), "--max-wait-ms", str(wait_ms), "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    import httpx

    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("server did not start")


async def load(port: int, hs: list[list[str]], clients: int, seconds: float, k: int) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = c
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = await http.post("/recommend", json={"history": hs[i % len(hs)], "k": k})
            lat.append(time.perf_counter() - t0)
            errors += r.status_code != 200
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as http:
        await http.post("/recommend", json={"history": hs[0], "k": k})  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
        health = (await http.get("/health")).json()
    a = np.array(lat) * 1000
    return {"requests": len(lat), "errors": errors, "requests_per_s": len(lat) / wall,
            "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "forward_batches": health["batches"], "mean_batch": health["histories_scored"] / max(1, health["batches"])}


def measure(run: Path, hs, args) -> dict:
    out = {}
    for name, mb, wait in (("micro-batching", args.max_batch, args.max_wait_ms), ("one forward per request", 1, 0.0)):
        port = free_port()
        proc = start_server(run, port, mb, wait, args.threads)
        try:
            out[name] = asyncio.run(load(port, hs, args.clients, args.seconds, args.k))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        print(run.name, name, json.dumps({k: round(v, 2) for k, v in out[name].items()}), flush=True)
    b, u = out["micro-batching"], out["one forward per request"]
    out["ratio_requests_per_s"] = b["requests_per_s"] / u["requests_per_s"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, action="append", required=True)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="server CPU threads")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    res = {"clients": args.clients, "seconds": args.seconds, "k": args.k, "server_threads": args.threads,
           "cpus": os.cpu_count(), "load_before": os.getloadavg()[0], "runs": {}}
    for run in args.run:
        res["runs"][str(run)] = measure(run, histories(run, 2000), args)
    print(json.dumps(res, indent=2))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
