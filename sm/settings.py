"""`Settings`: every `SM_*` environment variable, read once and checked, as one typed value.

This module is the only one that names the variables (tests/test_settings.py scans for the
others); docs/settings.md is their one table (name, type, default, reader, meaning). Field
`foo_bar` is variable `SM_FOO_BAR` (`env_name`). A process builds its `Settings` once, where
its environment comes in: the driver dispatcher (`sm.dispatch`, carried on by
`DriverContext.settings`) and `StorageManager(environ=...)` (`sm.api`). Library code run
without a context (the collector process, `sm.nbd.serving.available`) calls
`Settings.from_environ()` on the process environment. `sm.faults` is the one exception: a test
hook, it reads its variables itself (named by `env_name`) to stay a one-lookup no-op.

An unset or empty variable takes the default; `None` means "not set: the layer decides" (the
state directory defaults differ between drivers and `sm.api`). A value that does not parse is
InvalidArg (1) naming the variable. Loaded by every driver command: no costly imports here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sm.errors import InvalidArg
from sm.struct import Frozen

__all__ = ["DEFAULT_RUN_DIR", "DEFAULT_STATE_DIR", "REVERTS", "TRANSPORTS", "Settings",
           "env_name"]

PREFIX = "SM_"
DEFAULT_STATE_DIR = "/var/lib/sm"
"""Drivers' persistent per-host state (`SM_STATE_DIR`)."""
DEFAULT_RUN_DIR = "/run/sm"
"""Drivers' volatile per-boot state: sockets, pid files, locks (`SM_RUN_DIR`)."""
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")
DATA_PATHS = ("nbd", "none")
TRANSPORTS = ("inproc", "exec")
REVERTS = ("auto", "clone")
TRUE = ("1", "yes", "true", "on")
"""How a flag says yes (case-insensitive); `FALSE` how it says no."""
FALSE = ("0", "no", "false", "off")


class Settings(Frozen, kw_only=True):
    """The `SM_*` variables of one process (or one `StorageManager`); see docs/settings.md."""

    # drivers (sm.driver, sm.dispatch, sm.nbd, sm.gc, srtypes)
    state_dir: Path | None = None
    run_dir: Path | None = None
    log_level: str = "WARNING"
    log_file: str | None = None
    data_path: str = "nbd"
    gc_auto: bool = True
    gc_final_bytes: int = 8 * 1024 * 1024
    gc_rate: float = 0.0
    rbd_lease: float = 60.0
    rbd_lock_wait: float = 120.0
    # the layer above (sm.api, sm.cli, sm.server)
    home: Path | None = None
    config: Path | None = None
    default_sr_dir: Path | None = None
    driver_path: tuple[str, ...] = ()
    transport: str | None = None
    revert: str | None = None
    default_sr: str | None = None
    # test hooks
    test_faults: bool = False
    crash_at: str | None = None
    fail_at: str | None = None
    test_nfs_bind_exports: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every variable of `environ` (default: `os.environ`)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, parse in _PARSERS.items():
            raw = env.get(PREFIX + field.upper())
            if raw:
                values[field] = parse(PREFIX + field.upper(), raw)
        return cls(**values)

    @property
    def nbd_enabled(self) -> bool:
        """The NBD data path is on (`SM_DATA_PATH` is not `none`)."""
        return self.data_path != "none"


def env_name(field: str) -> str:
    """`"run_dir"` -> `"SM_RUN_DIR"`; only for a field of `Settings`."""
    if field not in Settings._name_set:
        raise KeyError(f"no setting {field!r}")
    return PREFIX + field.upper()


# -- parsers: (variable name, raw value) -> typed value, or InvalidArg naming the variable --


def _text(name: str, raw: str) -> str:
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw)


def _choice(choices: tuple[str, ...], *, fold: Callable[[str], str] = str.strip) -> Callable[
        [str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = fold(raw)
        if value not in choices:
            raise InvalidArg(f"{name}={raw!r}: expected one of {', '.join(choices)}")
        return value

    return parse


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise InvalidArg(f"{name}={raw!r}: expected 1/yes/true/on or 0/no/false/off")


def _bytes(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidArg(f"{name}={raw!r}: expected a whole number of bytes (>= 0)")
    return value


def _number(what: str, *, positive: bool = False) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            value = float("nan")
        # NaN fails both comparisons
        if not (value > 0 if positive else value >= 0) or value == float("inf"):
            raise InvalidArg(f"{name}={raw!r}: expected a number of {what} "
                             f"({'> 0' if positive else '>= 0'})")
        return value

    return parse


def _dirs(name: str, raw: str) -> tuple[str, ...]:
    return tuple(d for d in raw.split(os.pathsep) if d)


def _exports(name: str, raw: str) -> tuple[tuple[str, str], ...]:
    import json  # only when the test hook is set

    try:
        exports = json.loads(raw)
    except ValueError as err:
        raise InvalidArg(f"{name} is not JSON: {err}") from err
    if not isinstance(exports, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in exports.items()
    ):
        raise InvalidArg(f"{name} must map export paths to directories")
    return tuple(exports.items())


_PARSERS: Mapping[str, Callable[[str, str], Any]] = {
    "state_dir": _path,
    "run_dir": _path,
    "log_level": _choice(LOG_LEVELS, fold=lambda raw: raw.strip().upper()),
    "log_file": _text,
    "data_path": _choice(DATA_PATHS),
    "gc_auto": _flag,
    "gc_final_bytes": _bytes,
    "gc_rate": _number("bytes per second"),
    "rbd_lease": _number("seconds", positive=True),
    "rbd_lock_wait": _number("seconds"),
    "home": _path,
    "config": _path,
    "default_sr_dir": _path,
    "driver_path": _dirs,
    "transport": _choice(TRANSPORTS),
    "revert": _choice(REVERTS),
    "default_sr": _text,
    "test_faults": _flag,
    "crash_at": _text,
    "fail_at": _text,
    "test_nfs_bind_exports": _exports,
}
"""One parser per field, in field order (checked by tests/test_settings.py)."""
