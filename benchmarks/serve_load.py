"""roro serve under load: 64 concurrent clients, a stub upstream at a fixed latency, against the same
requests routed in process; one run, arms interleaved, so the ratios hold on a shared machine.

- upstream: ``python -m roro_sdk.testing`` (FakeOpenAIServer, its own process) answers every step
  after ``--latency-ms``; each request is ``--steps`` model calls (reasoning steps, then the answer);
- *in-process*: ``StepwiseRuntime.arun`` in this process, ``--clients`` workers in a closed loop;
- *server*: ``roro serve`` (its own process) over the same pool, the same number of workers here
  sending ``POST /v1/chat/completions`` over loopback (aiohttp keep-alive connections).

Reported per arm: requests, errors, throughput (req/s), latency p50/p99/max, CPU ms per request
(the server's process for the server arm; this process for the in-process arm). The server's
overhead = server minus in-process, at p50 and p99, and server/in-process as ratios. Loopback only;
bounded by ``--requests-per-client`` and ``--max-seconds``. Writes benchmarks/results/serve_load.json.

    python benchmarks/serve_load.py [--clients 64 --latency-ms 1000 --steps 2 --requests-per-client 3 --rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roro_sdk import FixedRouter, ModelPool, StepwiseRuntime  # noqa: E402


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_upstream(latency_ms: float, steps: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "roro_sdk.testing", "--latency-ms", str(latency_ms), "--steps", str(steps - 1)],
                            stdout=subprocess.PIPE, text=True, env=_env())
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"


def start_server(pool_file: Path, clients: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "roro_sdk", "serve", "--pool", str(pool_file), "--route", "bench=all-small",
                             "--no-router-specs", "--port", "0", "--max-concurrency", str(clients), "--max-queue", str(clients)],
                            stdout=subprocess.PIPE, text=True, env=_env())
    m = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if not m:
        proc.kill()
        raise SystemExit("roro serve did not start")
    return proc, f"http://127.0.0.1:{m.group(1)}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc), to charge the server arm its own work."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def questions(arm: str, rnd: int, n: int) -> list[str]:
    # distinct questions, so no layer can answer one from another's work
    return [f"[{arm} round {rnd} #{i}] What is {i} + {rnd}? Show the steps." for i in range(n)]


async def closed_loop(clients: int, qs: list[str], one, spread_s: float = 0.0) -> tuple[list[float], int, float]:
    """``clients`` workers, each sending its share of ``qs`` one after another; (latencies, errors, wall).
    Worker ``i`` starts ``i * spread_s / clients`` late: independent clients are not in lock-step, and
    64 requests released in the same millisecond would measure one burst's queue, not the server."""
    latencies: list[float] = []
    errors = 0

    async def worker(i: int, mine: list[str]) -> None:
        nonlocal errors
        await asyncio.sleep(i * spread_s / clients)
        for q in mine:
            t0 = time.perf_counter()
            try:
                ok = await one(q)
            except Exception:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i, qs[i::clients]) for i in range(clients)))
    return latencies, errors, time.perf_counter() - t0


async def run_in_process(rt: StepwiseRuntime, clients: int, qs: list[str], spread_s: float = 0.0) -> tuple[list[float], int, float]:
    async def one(q: str) -> bool:
        t = await rt.arun(q, raise_on_error=False)
        return t.stop_reason == "answer"

    return await closed_loop(clients, qs, one, spread_s)


async def run_server_arm(url: str, clients: int, qs: list[str], spread_s: float = 0.0) -> tuple[list[float], int, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def one(q: str) -> bool:
            body = {"model": "bench", "messages": [{"role": "user", "content": q}]}
            async with session.post(url + "/v1/chat/completions", json=body) as resp:
                data = await resp.json()
                return resp.status == 200 and data["roro"]["stop_reason"] == "answer"

        return await closed_loop(clients, qs, one, spread_s)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]  # nearest rank


def summary(lat: list[float], errors: int, wall: float, cpu_s: float) -> dict:
    n = len(lat) + errors
    return {"requests": n, "errors": errors, "wall_s": wall, "throughput_rps": len(lat) / wall if wall else 0.0,
            "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000, "max_ms": max(lat) * 1000 if lat else float("nan"),
            "mean_ms": sum(lat) / len(lat) * 1000 if lat else float("nan"), "cpu_ms_per_request": cpu_s / n * 1000 if n else 0.0}


async def main_async(a: argparse.Namespace) -> dict:
    upstream, api_base = start_upstream(a.latency_ms, a.steps)
    server = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
        pool_file = tmp / "pool.yaml"
        pool_file.write_text("models:\n" + "".join(
            f"  - {{name: {n}, model: openai/{n}, api_base: '{api_base}', input_price_per_m: {p}, output_price_per_m: {4 * p}}}\n"
            for n, p in (("small", 0.1), ("large", 1.0))))
        server, url = start_server(pool_file, a.clients)
        rt = StepwiseRuntime(ModelPool.from_file(pool_file), FixedRouter(), max_steps=a.steps + 2)
        # warm-up both arms: imports, connection pools, LiteLLM's lazy set-up
        await run_server_arm(url, a.clients, questions("warm", 1, a.clients))
        await run_in_process(rt, a.clients, questions("warm", 2, a.clients))
        # As `roro serve` does after start-up: a full collection over LiteLLM's ~390k import-time
        # objects pauses this process ~0.2 s, which would land in either arm's tail at random.
        if not a.no_gc_freeze:
            gc.collect()
            gc.freeze()

        n = a.clients * a.requests_per_client
        arms: dict[str, dict[str, list]] = {"in_process": {"lat": [], "err": [], "wall": [], "cpu": []},
                                            "server": {"lat": [], "err": [], "wall": [], "cpu": [], "client_cpu": []}}
        for rnd in range(a.rounds):
            for arm in (("in_process", "server") if rnd % 2 == 0 else ("server", "in_process")):
                qs = questions(arm, rnd, n)
                c0, s0 = time.process_time(), cpu_seconds(server.pid)
                spread = a.latency_ms * a.steps / 1000  # starts spread over one request's ideal time
                if arm == "in_process":
                    lat, err, wall = await run_in_process(rt, a.clients, qs, spread)
                    cpu = time.process_time() - c0
                else:
                    lat, err, wall = await run_server_arm(url, a.clients, qs, spread)
                    cpu = cpu_seconds(server.pid) - s0
                    arms[arm]["client_cpu"].append(time.process_time() - c0)
                for k, v in (("lat", lat), ("err", [err]), ("wall", [wall]), ("cpu", [cpu])):
                    arms[arm][k] += v
                print(f"  round {rnd} {arm:<10} {len(lat) + err} requests, {err} errors, {wall:.1f} s", flush=True)
    finally:
        for p in (server, upstream):
            if p is not None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()

    res = {k: summary(v["lat"], sum(v["err"]), sum(v["wall"]), sum(v["cpu"])) for k, v in arms.items()}
    res["server"]["client_cpu_ms_per_request"] = sum(arms["server"]["client_cpu"]) / res["server"]["requests"] * 1000
    ip, sv = res["in_process"], res["server"]
    return {
        "in_process": ip, "server": sv,
        "overhead": {"p50_ms": sv["p50_ms"] - ip["p50_ms"], "p99_ms": sv["p99_ms"] - ip["p99_ms"],
                     "mean_ms": sv["mean_ms"] - ip["mean_ms"],
                     "server_cpu_ms_per_request": sv["cpu_ms_per_request"] - ip["cpu_ms_per_request"]},
        "ratios": {"p50": sv["p50_ms"] / ip["p50_ms"], "p99": sv["p99_ms"] / ip["p99_ms"],
                   "throughput": sv["throughput_rps"] / ip["throughput_rps"],
                   "cpu_per_request": sv["cpu_ms_per_request"] / ip["cpu_ms_per_request"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--latency-ms", type=float, default=1000.0, help="the stub upstream's latency per model call")
    ap.add_argument("--steps", type=int, default=2, help="model calls per request (steps, the last one the answer)")
    ap.add_argument("--requests-per-client", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="rounds; each runs both arms, their order alternating")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="give up after this long")
    ap.add_argument("--no-gc-freeze", action="store_true", help="leave this process's collector as it is (the server's is frozen)")
    ap.add_argument("--target-p99-overhead-ms", type=float, default=10.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load.json"))
    a = ap.parse_args()

    load_before = os.getloadavg()
    print(f"{a.clients} clients x {a.requests_per_client} requests x {a.rounds} rounds per arm; upstream latency "
          f"{a.latency_ms:g} ms x {a.steps} calls per request; load average {load_before[0]:.2f}", flush=True)
    res = asyncio.run(asyncio.wait_for(main_async(a), a.max_seconds))
    load_after = os.getloadavg()
    ideal_ms = a.latency_ms * a.steps
    out = {
        "config": {k: v for k, v in vars(a).items() if k != "out"} | {"python": sys.version.split()[0], "cpus": os.cpu_count()},
        "load_average_before": load_before, "load_average_after": load_after, "latency_only_ideal_ms": ideal_ms,
        **res,
        "target_met": res["server"]["errors"] == 0 and res["in_process"]["errors"] == 0
                      and res["overhead"]["p99_ms"] <= a.target_p99_overhead_ms,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))

    ip, sv, ov, ra = res["in_process"], res["server"], res["overhead"], res["ratios"]
    print(f"\n{'arm':<12}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cpu ms/req':>12}")
    for name, r in (("ideal", None), ("in-process", ip), ("server", sv)):
        if r is None:
            print(f"{name:<12}{'':>9}{'':>8}{a.clients / ideal_ms * 1000:8.1f}{ideal_ms:9.1f}{ideal_ms:9.1f}")
            continue
        print(f"{name:<12}{r['requests']:9d}{r['errors']:8d}{r['throughput_rps']:8.1f}{r['p50_ms']:9.1f}{r['p99_ms']:9.1f}"
              f"{r['max_ms']:9.1f}{r['cpu_ms_per_request']:12.2f}")
    print(f"server overhead: p50 {ov['p50_ms']:+.1f} ms, p99 {ov['p99_ms']:+.1f} ms (target <= {a.target_p99_overhead_ms:g}), "
          f"server CPU {ov['server_cpu_ms_per_request']:+.2f} ms/request (+ {sv['client_cpu_ms_per_request']:.2f} ms in the clients)")
    print(f"server / in-process: p50 x{ra['p50']:.3f}, p99 x{ra['p99']:.3f}, throughput x{ra['throughput']:.3f}, "
          f"CPU per request x{ra['cpu_per_request']:.2f}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; target met: {out['target_met']}")


if __name__ == "__main__":
    main()
