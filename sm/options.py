"""Typed options of the layer above: one parser for the methods of `sm.api.StorageManager`,
used by `sm.api`, `sm serve` and the CLI (outside `sm.api` so the CLI imports it cheaply).

A method's own annotations are its option schema. `@checked` validates every call against
them before the method runs, so a wrong option never reaches a driver:

- an option the method does not have: InvalidArg (1) naming it and the options it has;
- a `Literal[...]` option (a scope, a format) whose value is not one of its values: InvalidArg
  naming the option and the allowed values;
- a `bool` option given anything but True/False (an XML-RPC client sending "false" as a
  string must not get True): InvalidArg;
- missing or extra positional arguments: InvalidArg (not a TypeError).

`StorageManager` is decorated with `checked_methods`: every public method, its mixins'
included, goes through `checked`.

`sm.server.methods` binds XML-RPC parameters with `bind` (the same unknown-option rule) and
then calls the checked method; the CLI builds its choices from `allowed` (e.g.
`click.Choice(allowed(DeleteScope))`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal, ParamSpec, TypeVar, get_args, get_origin

from sm.errors import InvalidArg

__all__ = ["DataFormat", "DeleteScope", "allowed", "bind", "check", "checked", "checked_methods"]

DeleteScope = Literal["one", "with-children", "children-only"]
"""`vdi_delete` / `vm_snapshot_delete`: which snapshots go (the libvirt model)."""
DataFormat = Literal["raw", "vhd"]
"""`vdi_export` / `vdi_import`."""

P = ParamSpec("P")
R = TypeVar("R")


def allowed(kind: Any) -> tuple[str, ...]:
    """The values of a `Literal[...]` option type."""
    return tuple(str(v) for v in get_args(kind))


def _kind(func: Callable[..., Any], annotation: Any) -> Any:
    """The annotation as a type when it is one we check (a Literal, bool), else None."""
    if isinstance(annotation, str):
        if annotation == "bool":
            return bool
        try:
            annotation = eval(annotation, {**func.__globals__, "Literal": Literal})
        except Exception:
            return None
    if annotation is bool or get_origin(annotation) is Literal:
        return annotation
    return None


def _schema(func: Callable[..., Any]) -> dict[str, Any]:
    sig = inspect.signature(func)
    kinds = {name: _kind(func, p.annotation) for name, p in sig.parameters.items()}
    return {name: kind for name, kind in kinds.items() if kind is not None}


def _label(func: Callable[..., Any]) -> str:
    return func.__name__


def options_of(func: Callable[..., Any]) -> list[str]:
    """The keyword options of a method (its keyword-only parameters)."""
    return [p.name for p in inspect.signature(func).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]


def unknown(func: Callable[..., Any], method: str, kwargs: Mapping[str, Any]) -> None:
    """InvalidArg for the first keyword `func` does not take, naming the ones it does."""
    params = inspect.signature(func).parameters
    has_var = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for key in kwargs:
        if key not in names and not has_var:
            known = options_of(func)
            raise InvalidArg(f"{method}: unknown option {key!r} (options: "
                             f"{', '.join(known) if known else 'none'})")


def check(method: str, option: str, value: Any, kind: Any) -> None:
    """InvalidArg unless `value` is valid for an option of type `kind`."""
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidArg(f"{method}: option {option}={value!r} must be true or false")
        return
    values = get_args(kind)
    if value not in values:
        raise InvalidArg(f"{method}: option {option}={value!r} is not one of "
                         f"{', '.join(map(str, values))}")


def bind(func: Callable[..., Any], method: str, args: list[Any], kwargs: Mapping[str, Any]
         ) -> inspect.BoundArguments:
    """Bind a call the way `checked` does: unknown options and missing or extra arguments
    are InvalidArg."""
    unknown(func, method, kwargs)
    try:
        return inspect.signature(func).bind(*args, **kwargs)
    except TypeError as err:
        raise InvalidArg(f"{method}: {err}") from err


def checked(func: Callable[P, R]) -> Callable[P, R]:
    """Validate every call of an API method against its annotations (module docstring)."""
    schema: dict[str, Any] | None = None

    if getattr(func, "_checked", False):
        return func

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        nonlocal schema
        if schema is None:
            schema = _schema(func)
        bound = bind(func, _label(func), list(args), kwargs)
        for name, value in bound.arguments.items():
            kind = schema.get(name)
            if kind is not None:
                check(_label(func), name, value, kind)
        return func(*args, **kwargs)

    wrapper._checked = True  # type: ignore[attr-defined]
    return wrapper


C = TypeVar("C", bound=type)


def checked_methods(cls: C) -> C:
    """Class decorator: every public method of `cls` (its mixins' too) is `checked`, so no
    method of the API takes an unknown option or a bad option value silently."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if inspect.isfunction(attr) and not getattr(attr, "_checked", False):
            setattr(cls, name, checked(attr))
    return cls
