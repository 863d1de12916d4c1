"""``roro serve``: the routed system behind an OpenAI-compatible HTTP API (docs/serve.md).

Options given on the command line override the ``--config`` file's; ``--route`` adds routes.
Light to import: the server's modules load only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._extras import require


def cmd_serve(args: argparse.Namespace) -> int:
    require("aiohttp", extra="server")
    from .config import ServeConfig, parse_route
    from .server import run_server

    routes = dict(parse_route(r) for r in args.route) if args.route else None
    overrides: dict[str, Any] = {
        "pool": args.pool, "routes": routes, "host": args.host, "port": args.port, "api_key_env": args.api_key_env,
        "api_key_file": args.api_key_file, "trajectory_log": args.trajectory_log, "seed": args.seed,
        "access_log": True if args.access_log else None, "allow_router_specs": False if args.no_router_specs else None,
        "limits": {"max_body_bytes": args.max_body_bytes, "max_concurrency": args.max_concurrency,
                   "max_queue": args.max_queue, "shutdown_timeout_s": args.shutdown_timeout},
        "budgets": {"max_steps": args.max_steps, "token_budget": args.token_budget, "cost_budget": args.cost_budget},
    }
    config = ServeConfig.from_file(args.config, **overrides) if args.config else ServeConfig().merged(**overrides)
    run_server(config)
    return 0


def add_commands(sub: Any, common: Any) -> None:
    p = sub.add_parser("serve", help="serve routes as an OpenAI-compatible API (/v1/chat/completions, /v1/models, /metrics)",
                       description="Serve the routed system over HTTP. A request's 'model' names a route. Binds 127.0.0.1 "
                                   "unless --host says otherwise; beyond loopback, API keys are required.")
    p.add_argument("--config", default=None, help="serve config YAML (pool, routes, limits, budgets; docs/serve.md)")
    p.add_argument("--pool", default=None, help="pool file (.yaml/.toml/.json) or 'sim[:preset]'; default: the local pool")
    p.add_argument("--route", action="append", default=[], metavar="NAME=SPEC",
                   help="a route: request model NAME runs router SPEC (repeatable), e.g. --route steer-0.8=steer:0.8")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1; any other needs API keys)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key-env", default=None, help="env var with comma-separated API keys (default RORO_SERVE_API_KEYS)")
    p.add_argument("--api-key-file", default=None, help="file with one API key per line")
    p.add_argument("--trajectory-log", default=None, metavar="FILE", help="append every served trajectory to this JSONL file")
    p.add_argument("--no-router-specs", action="store_true", help="serve only the named routes, not any router spec")
    p.add_argument("--max-concurrency", type=int, default=None, help="requests routed at once (default 64)")
    p.add_argument("--max-queue", type=int, default=None, help="requests waiting beyond that before 429 (default 256)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="largest request body (default 1 MiB)")
    p.add_argument("--shutdown-timeout", type=float, default=None, help="seconds in-flight requests get on shutdown (default 30)")
    p.add_argument("--max-steps", type=int, default=None, help="steps per request, at most (default 24)")
    p.add_argument("--token-budget", type=int, default=None, help="output tokens per request, at most")
    p.add_argument("--cost-budget", type=float, default=None, help="dollars per request, at most")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--access-log", action="store_true", help="log each request line to stderr (never headers or keys)")
    p.set_defaults(func=cmd_serve)
