"""Write your own router and run it offline: escalate to the large model after the small one
has written two steps, and keep a budget guard around it.

    python examples/custom_router.py
"""

from roro_sdk import BudgetGuard, Decision, ModelPool, Router, StepwiseRuntime
from roro_sdk.testing import FakeModel, FakeOpenAIServer


class EscalateAfterTwo(Router):
    name = "escalate-after-two"

    def decide(self, state):
        model = state.pool.small if state.step_index < 2 else state.pool.large
        return Decision(model, {model: 1.0}, f"step {state.step_index}")


with FakeOpenAIServer({"small": FakeModel(answer="41", steps=5), "large": FakeModel(answer="42", steps=5)}) as server:
    pool = ModelPool([server.spec("small", price=(0.15, 0.6)), server.spec("large", price=(2.0, 8.0))])
    runtime = StepwiseRuntime(pool, BudgetGuard(EscalateAfterTwo(), min_fraction=0.3), cost_budget=0.01)
    traj = runtime.run({"question": "What is 6 * 7?", "answer": "42"})
    for step in traj.steps:
        print(f"[{step.index}] {step.model:5} {step.text}   ({step.reason})")
    print("answer:", traj.answer, "correct:", traj.correct, f"cost: ${traj.cost_usd:.5f}", "stop:", traj.stop_reason)
