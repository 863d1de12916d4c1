"""How the data-parallel commands run on Ray: ``--ray auto|ADDRESS`` and its Python twin.

Kept free of Ray itself: options are checked (and a bad address refused with one line) before
Ray is imported, and a process that never asks for Ray never imports it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from ..errors import ConfigError, RayConfigError
from ..types import ConfigModel

# host:port (a head node's GCS, as `ray start --head` prints it) or ray://host:port (Ray Client).
_ADDRESS = re.compile(r"^(ray://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.\-_]*):\d{1,5}$")


class RayOptions(ConfigModel):
    """Where and how wide the work runs on Ray.

    ``address``: ``auto`` (a Ray instance already running in this process, else the cluster this
    machine belongs to, else a new one-machine instance), ``local`` (always a new one-machine
    instance), ``host:port`` (a head node's GCS address) or ``ray://host:port`` (Ray Client).
    ``workers``: how many workers to start (default: as many as the cluster's free CPUs, or GPUs
    when ``num_gpus`` > 0, hold). Each worker builds its pool once (local models load once per
    worker) and reserves ``num_cpus`` / ``num_gpus`` of Ray's resources, which is how Ray places
    it. ``concurrency``: queries in flight per worker (default: the command's ``--concurrency``).
    ``max_attempts``: how often one query is tried when its worker dies under it or it raises;
    after that it is recorded as an error and the run goes on. ``max_worker_restarts``: how many
    dead workers are replaced in one run before the run stops (what finished is kept).
    ``init``: extra ``ray.init`` keywords, used only when this process starts Ray itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = "auto"
    workers: int | None = Field(None, ge=1)
    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    concurrency: int | None = Field(None, ge=1)
    max_attempts: int = Field(3, ge=1)
    max_worker_restarts: int = Field(8, ge=0)
    init: dict[str, Any] = Field(default_factory=dict)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        v = v.strip()
        if v in ("auto", "local") or _ADDRESS.match(v):
            return v
        raise ValueError(f"--ray {v!r} is not a Ray address: give 'auto' (a running cluster, else one on this machine), "
                         "'local', host:port (the head node's address from 'ray start --head') or ray://host:port")


def ray_options(value: RayOptions | str | dict[str, Any] | None, **defaults: Any) -> RayOptions | None:
    """``value`` as :class:`RayOptions`: an address string (``"auto"``, ``"10.0.0.5:6379"``), a dict
    of fields, options, or None (the local path: no Ray). ``defaults`` fill fields the value leaves
    unset (a command's ``--ray-workers``). Bad input is a :class:`RayConfigError`."""
    if value is None:
        return None
    try:
        if isinstance(value, RayOptions):
            return value.model_copy(update={k: v for k, v in defaults.items() if getattr(value, k) is None}) \
                if defaults else value
        if isinstance(value, str):
            return RayOptions(address=value, **{k: v for k, v in defaults.items() if v is not None})
        if isinstance(value, dict):
            return RayOptions(**{**{k: v for k, v in defaults.items() if v is not None}, **value})
    except RayConfigError:
        raise
    except ConfigError as e:
        raise RayConfigError(str(e)) from None
    raise RayConfigError(f"ray must be an address string, a dict or RayOptions, not {type(value).__name__}")
