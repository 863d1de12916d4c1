"""Training: trajectory collection, preference pairs, Rubricor/Judge alternating optimisation, GRPO.

Submodules import torch/transformers only when used; importing ``roro_sdk.train`` is cheap.

* :mod:`roro_sdk.collect` and :mod:`roro_sdk.pairs`: stage 1 data (``roro collect``, ``roro pairs``).
* :mod:`roro_sdk.train.judge_training`: stage 2, alternating Judge/Rubricor training (``roro train-judge``).
"""

from __future__ import annotations

__all__: list[str] = []
