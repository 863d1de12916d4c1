"""roro serve, offline: an OpenAI-compatible server over the sim bench, asked by the official
``openai`` client (plain and streamed) and by LiteLLM through the ``roro/<route>`` provider. No key,
no network, a few seconds. The same server from a terminal:

    roro serve --pool sim:careful --route steer-0.8=steer:0.8 --route cheap=all-small --route best=all-large

    python examples/serve_offline.py [--queries 8]
"""

import argparse
import tempfile
from pathlib import Path

import litellm
from openai import OpenAI

from roro_sdk import read_trajectories
from roro_sdk.serve import ServeConfig, register_roro_provider, start_server
from roro_sdk.sim import sim_queries

ap = argparse.ArgumentParser()
ap.add_argument("--queries", type=int, default=8)
args = ap.parse_args()

log = Path(tempfile.mkdtemp()) / "served.jsonl"
routes = {"cheap": "all-small", "steer-0.8": "steer:0.8", "best": "all-large"}
queries = sim_queries("sim:careful", n=args.queries)
with start_server(ServeConfig(pool="sim:careful", routes=routes, port=0, trajectory_log=str(log))) as server:
    client = OpenAI(base_url=server.url + "/v1", api_key="not-needed-on-loopback")
    print("routes:", [m.id for m in client.models.list()])
    print(f"{'route':10} {'correct':>8} {'cost $':>10} {'large steps':>12}")
    for route in routes:
        correct = cost = large = steps = 0
        for q in queries:
            r = client.chat.completions.create(model=route, messages=[{"role": "user", "content": q.question}],
                                               extra_body={"roro": {"answer": q.answer}})
            correct += r.roro["correct"]
            cost += r.usage.cost
            large += r.roro["steps_by_model"].get("large", 0)
            steps += r.roro["n_steps"]
        print(f"{route:10} {correct:>5}/{len(queries)} {cost:10.5f} {large / steps:12.0%}")

    print("\nstreamed, step by step:")
    for chunk in client.chat.completions.create(model="steer-0.8", messages=[{"role": "user", "content": queries[0].question}],
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            print(f"  [{chunk.roro['step']['model']:5}] {chunk.choices[0].delta.content.strip()}")

    register_roro_provider(server.service)  # the same routes, in process, as a LiteLLM model
    r = litellm.completion(model="roro/steer-0.8", messages=[{"role": "user", "content": queries[1].question}])
    print(f"\nlitellm roro/steer-0.8: {r.choices[0].message.content.splitlines()[-1]!r}, cost ${r.usage.cost:.6f}, "
          f"steps by model {r.roro['steps_by_model']}")

print(f"trajectory log: {len(read_trajectories(log))} served trajectories in {log}")
