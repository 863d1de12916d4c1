"""Compare routers offline against a local OpenAI-compatible server (no key, no network, ~5 s).

    python examples/offline_fake_server.py
"""

from roro_sdk import ModelPool, Query, StepwiseRuntime, make_router
from roro_sdk.eval import summarize
from roro_sdk.testing import FakeModel, FakeOpenAIServer

models = {
    "small": FakeModel(answer="41", steps=4, confidence=0.55, verdict="5"),
    "large": FakeModel(answer="42", steps=4, confidence=0.95, verdict="8"),
}
with FakeOpenAIServer(models, latency_s=0.005) as server:
    pool = ModelPool([server.spec("small", price=(0.15, 0.6)), server.spec("large", price=(2.0, 8.0))])
    queries = [Query(id=f"q{i}", question=f"Problem {i}: what is 6 * 7?", answer="42") for i in range(16)]
    for spec in ["all-small", "all-large", "random:0.3", "steer:0.7", "specreason:7", "trim:0.5"]:
        router = make_router(spec)
        trajs = StepwiseRuntime(pool, router, max_steps=8).run_many(queries, concurrency=8)
        s = summarize(trajs, large=pool.large, router=router.name)
        print(f"{s.router:14} accuracy {s.accuracy:5.0%}  cost ${s.total_cost_usd:.5f}  large steps {s.large_step_share:4.0%}")
