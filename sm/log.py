"""Loggers that import `logging` only when there is something to log.

A driver process runs one command and, when it goes well, logs nothing at the default level:
importing and configuring `logging` (with `traceback`, `threading`, `string`, ...) was a
measurable part of every `bin/<Type>SR` start. `get_logger(name)` returns a `LazyLogger`
with the `logging.Logger` methods a module needs (`debug`, `info`, `warning`, `error`,
`exception`, `log`, `isEnabledFor`):

- while nothing has imported `logging`, a call below the threshold (`configure`; WARNING by
  default, which is what an unconfigured `logging` shows) returns at once;
- any other call imports `logging`, runs the setup registered with `configure` (once), and is
  handed to `logging.getLogger(name)`, so records look exactly as if the module had used that
  logger; once `logging` is imported (the CLI, the server, tests) the real logger decides.

Standard library only (the VHD engine uses it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["LEVELS", "LazyLogger", "configure", "get_logger"]

LEVELS = {"CRITICAL": 50, "ERROR": 40, "WARNING": 30, "INFO": 20, "DEBUG": 10, "NOTSET": 0}

_threshold = LEVELS["WARNING"]
_setup: Callable[[], None] | None = None


def configure(setup: Callable[[], None] | None, threshold: int) -> None:
    """Register the logging setup to run before the first record, and the lowest level that
    needs it (records below are dropped while `logging` is not imported)."""
    global _setup, _threshold
    _setup, _threshold = setup, threshold


def _real(name: str) -> Any:
    global _setup
    import logging

    setup, _setup = _setup, None
    if setup is not None:
        setup()
    return logging.getLogger(name)


class LazyLogger:
    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: Any = None

    def _resolve(self, level: int) -> Any:
        if self._logger is None:
            if level < _threshold and "logging" not in sys.modules:
                return None
            self._logger = _real(self.name)
        return self._logger

    def isEnabledFor(self, level: int) -> bool:
        logger = self._resolve(level)
        return logger is not None and bool(logger.isEnabledFor(level))

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        logger = self._resolve(level)
        if logger is not None:
            kwargs.setdefault("stacklevel", 2)
            logger.log(level, msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(10, msg, *args, stacklevel=3, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(20, msg, *args, stacklevel=3, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(30, msg, *args, stacklevel=3, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(40, msg, *args, stacklevel=3, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self.log(40, msg, *args, stacklevel=3, **kwargs)


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
