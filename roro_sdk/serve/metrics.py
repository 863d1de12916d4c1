"""Prometheus text exposition of what the server did: requests, errors, steps, tokens, cost, latency.

Written out rather than taken from ``prometheus_client``: a dozen series do not justify a
dependency, and the format (text 0.0.4) is a few lines. Label values come from the server's own
route and model names, never from raw client input, so the series stay few.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from ..types import Trajectory

# Seconds. Steps of hosted models take ~0.1-10 s; a routed request is several of them.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

_HELP = {
    "roro_requests_total": ("counter", "Chat completion requests answered, by route and HTTP status"),
    "roro_errors_total": ("counter", "Error responses by kind (bad_request, auth, not_found, too_large, overloaded, upstream, internal)"),
    "roro_steps_total": ("counter", "Reasoning steps written, by model"),
    "roro_tokens_total": ("counter", "Tokens by model and direction (input, output), side calls included"),
    "roro_cost_usd_total": ("counter", "Dollars spent, by model"),
    "roro_request_duration_seconds": ("histogram", "Time to route one request, by route"),
    "roro_step_duration_seconds": ("histogram", "Latency of one step's model call, by model"),
    "roro_in_flight_requests": ("gauge", "Requests being routed now"),
    "roro_queued_requests": ("gauge", "Requests waiting for a slot"),
}


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    esc = (lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
    return "{" + ",".join(f'{k}="{esc(str(v))}"' for k, v in pairs) + "}"


class Metrics:
    """Counters, gauges and histograms, thread-safe (the LiteLLM provider may run in many threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._hist: dict[str, dict[tuple, list[float]]] = defaultdict(dict)  # bucket counts..., sum, count

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] += value

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            h = self._hist[name].get(key)
            if h is None:
                h = self._hist[name][key] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def record_trajectory(self, route: str, traj: Trajectory) -> None:
        """Steps, tokens, cost and step latencies of one routed request."""
        for s in traj.steps:
            self.inc("roro_steps_total", model=s.model)
            self.observe("roro_step_duration_seconds", s.latency_s, model=s.model)
        calls = [c for s in traj.steps for c in [s, *s.side_calls]] + list(traj.side_calls)
        for c in calls:
            self.inc("roro_tokens_total", c.input_tokens, model=c.model, direction="input")
            self.inc("roro_tokens_total", c.output_tokens, model=c.model, direction="output")
            self.inc("roro_cost_usd_total", c.cost_usd, model=c.model)
        self.observe("roro_request_duration_seconds", traj.wall_time_s, route=route)

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """The text exposition format (``text/plain; version=0.0.4``)."""
        out: list[str] = []
        with self._lock:
            for name, (kind, help_text) in _HELP.items():
                series = self._values.get(name) if kind != "histogram" else self._hist.get(name)
                out.append(f"# HELP {name} {help_text}")
                out.append(f"# TYPE {name} {kind}")
                if not series:
                    if kind == "gauge":
                        out.append(f"{name} 0")
                    continue
                for key in sorted(series):
                    if kind != "histogram":
                        out.append(f"{name}{_labels(key)} {series[key]:.10g}")
                        continue
                    h = series[key]
                    for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], [*h[:len(LATENCY_BUCKETS)], h[-1]]):
                        out.append(f"{name}_bucket{_labels((*key, ('le', bound)))} {count:.10g}")
                    out.append(f"{name}_sum{_labels(key)} {h[-2]:.10g}")
                    out.append(f"{name}_count{_labels(key)} {h[-1]:.10g}")
        return "\n".join(out) + "\n"
