"""API keys of ``roro serve``: where they come from, when they are required, how they are checked.

Keys are read from an environment variable (comma-separated) and/or a file (one a line, ``#``
comments), never from the command line (which ``ps`` shows to every user). Beyond loopback the
server refuses to start without one. Comparison is constant-time over every configured key, so
neither a key's prefix nor which key matched shows in the response time. No key is ever
printed or logged; errors name the variable or the file.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from ..errors import ConfigError

MIN_KEY_LENGTH = 8


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def load_api_keys(env_name: str | None, file: str | None) -> list[str]:
    """The configured keys (maybe none). A file that is named must exist and hold a key."""
    keys: list[str] = []
    if env_name and os.environ.get(env_name):
        keys += [k.strip() for k in os.environ[env_name].split(",") if k.strip()]
    if file:
        from .._files import read_text_file

        lines = read_text_file(Path(file).expanduser(), what="API key file").splitlines()
        from_file = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not from_file:
            raise ConfigError(f"API key file {file} holds no key (one key per line)")
        keys += from_file
    short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_LENGTH]
    if short:
        where = " and ".join(x for x in (f"${env_name}" if env_name else "", file or "") if x)
        raise ConfigError(f"an API key from {where} is shorter than {MIN_KEY_LENGTH} characters; use long random keys "
                          "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return keys


class KeyChecker:
    """Checks ``Authorization: Bearer <key>`` against the configured keys in constant time."""

    def __init__(self, keys: list[str]):
        self._keys = [k.encode("utf-8") for k in keys]

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def allows(self, authorization: str | None) -> bool:
        if not self._keys:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode("utf-8") if scheme.lower() == "bearer" else b""
        ok = False
        for key in self._keys:  # every key is compared, match or not
            ok |= hmac.compare_digest(key, given)
        return ok and bool(given)


def check_exposure(host: str, keys: list[str], key_env: str | None, key_file: str | None) -> None:
    """Refuse to listen beyond loopback without keys: an open server spends the pool's money."""
    if keys or is_loopback(host):
        return
    how = f"export {key_env}=<key>[,<key>...]" if key_env else "set api_key_env"
    raise ConfigError(f"--host {host} listens beyond this machine, so API keys are required: {how}, or pass "
                      f"--api-key-file FILE{f' (now {key_file})' if key_file else ''}")
