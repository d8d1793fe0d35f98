"""The one place the Ceph client libraries are found: Debian's ``python3-rados`` and
``python3-rbd`` (librados/librbd bindings built for /usr/bin/python3, CPython 3.11).

They are not on PyPI, so a virtualenv (or nbdkit's embedded Python) cannot pip-install them.
`load()` imports them normally when they are importable, otherwise loads exactly the two
extension modules from the system's dist-packages by file (nothing else from there leaks onto
sys.path). Standard library only: nbdkit's Python imports this module too.
"""

from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

__all__ = ["CephUnavailable", "load"]

DIST_DIRS = ("/usr/lib/python3/dist-packages",)


class CephUnavailable(ImportError):
    """python3-rados / python3-rbd are not installed (scripts/setup.sh installs them)."""


def _load_file(name: str) -> ModuleType:
    tag = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"
    for d in DIST_DIRS:
        for path in sorted(glob.glob(os.path.join(d, f"{name}.{tag}-*.so"))):
            loader = importlib.machinery.ExtensionFileLoader(name, path)
            spec = importlib.util.spec_from_file_location(name, path, loader=loader)
            if spec is None:
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            return module
    raise CephUnavailable(f"the {name} Python binding (Debian package python3-{name}) for "
                          f"Python {sys.version_info[0]}.{sys.version_info[1]} is not installed")


def _module(name: str) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ImportError:
        return _load_file(name)


def load() -> tuple[Any, Any]:
    """The `rados` and `rbd` modules (rbd imports rados, so rados comes first)."""
    rados = _module("rados")
    rbd = _module("rbd")
    return rados, rbd
