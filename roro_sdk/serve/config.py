"""What ``roro serve`` serves and how: the pool, the routes, the address, keys, limits, budgets.

One config model for the command line, a YAML file and the Python API, so the server and the
``roro/<route>`` LiteLLM provider run the same routes with the same ceilings.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ..errors import ConfigError
from ..types import ConfigModel

# Route names travel in the ``model`` field and in metric labels: keep them plain.
_ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DEFAULT_ROUTES = {"all-small": "all-small", "all-large": "all-large"}
DEFAULT_KEY_ENV = "RORO_SERVE_API_KEYS"


class ServeLimits(ConfigModel):
    """Protections of the server process. Past ``max_concurrency + max_queue`` requests a request
    is refused at once with 429 and ``Retry-After`` rather than queued without bound."""

    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576, description="largest request body (413 above)")
    max_concurrency: int = Field(64, ge=1, le=4096, description="requests routed at the same time")
    max_queue: int = Field(256, ge=0, le=100_000, description="requests waiting for a slot; beyond: 429")
    retry_after_s: int = Field(1, ge=1, le=3600, description="the Retry-After of a 429")
    shutdown_timeout_s: float = Field(30.0, ge=0.0, le=3600.0, description="how long in-flight requests may finish on shutdown")


class ServeBudgets(ConfigModel):
    """Per-request ceilings. A request may ask for less (``max_tokens``, ``roro.max_cost_usd``,
    ``roro.max_steps``), never for more."""

    max_steps: int = Field(24, ge=1, le=1024)
    token_budget: int | None = Field(None, ge=1, description="output tokens per request, all steps together")
    cost_budget: float | None = Field(None, ge=0.0, allow_inf_nan=False, description="dollars per request")


class ServeConfig(ConfigModel):
    """Everything ``roro serve`` needs. ``pool``: a pool file, ``sim[:preset]`` (the test bench) or an
    inline pool mapping; None is the embedded local pool. ``routes``: route name -> router spec
    (``roro routers`` lists the specs); routers are built once at start-up and shared.
    ``allow_router_specs``: a request's ``model`` may also be any router spec without weights."""

    pool: str | dict[str, Any] | None = None
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    allow_router_specs: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key_env: str | None = Field(DEFAULT_KEY_ENV, description="env var holding comma-separated API keys")
    api_key_file: str | None = Field(None, description="file with one API key per line")
    trajectory_log: str | None = Field(None, description="append every served trajectory to this JSONL file")
    access_log: bool = False
    seed: int = 0
    limits: ServeLimits = Field(default_factory=ServeLimits)
    budgets: ServeBudgets = Field(default_factory=ServeBudgets)

    @field_validator("routes")
    @classmethod
    def _routes_named_plainly(cls, v: dict[str, str]) -> dict[str, str]:
        for name, spec in v.items():
            if not _ROUTE_NAME.match(name):
                raise ValueError(f"route name {name!r} must be 1-64 letters, digits or . _ : - (it is the request's model)")
            if not isinstance(spec, str) or not spec.strip():
                raise ValueError(f"route {name!r} needs a router spec (see 'roro routers')")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name_not_a_key(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "").isalnum():
            raise ValueError("api_key_env must be the NAME of an environment variable, not a key")
        return v

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> ServeConfig:
        """A config from YAML; relative paths in it (pool, key file, log) are relative to the file."""
        import yaml

        from .._files import read_text_file
        from ..tasks import is_sim_spec

        p = Path(path)
        try:
            data = yaml.safe_load(read_text_file(p, what="serve config", error=ConfigError)) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse serve config {p}: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"serve config {p}: expected a mapping (pool:, routes:, ...)")
        for key in ("pool", "api_key_file", "trajectory_log"):
            value = data.get(key)
            if isinstance(value, str) and key == "pool" and is_sim_spec(value):
                continue
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                data[key] = str(p.parent / value)
        try:
            cfg = cls.model_validate(data)
        except ConfigError as e:
            raise ConfigError(f"serve config {p}: {e}") from None
        return cfg.merged(**overrides)

    def merged(self, **overrides: Any) -> ServeConfig:
        """A copy with the given (not None) fields replaced; ``routes`` are added to the file's."""
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "routes":
                data["routes"] = {**({} if self.routes == DEFAULT_ROUTES else data["routes"]), **value}
            elif key in ("limits", "budgets"):
                data[key] = {**data[key], **{k: v for k, v in value.items() if v is not None}}
            else:
                data[key] = value
        return ServeConfig.model_validate(data)


def parse_route(text: str) -> tuple[str, str]:
    """``NAME=SPEC`` (``--route steer-0.8=steer:0.8``) -> (name, spec); a bare spec names itself."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep:
        return name, name
    if not name or not spec:
        raise ConfigError(f"--route {text!r}: expected NAME=ROUTER_SPEC, e.g. steer-0.8=steer:0.8")
    return name, spec
