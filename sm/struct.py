"""`Frozen`: immutable value classes that cost nothing to define.

A driver process is started for every SMAPIv1 command and defines every class it imports.
`dataclasses` generates and compiles `__init__`, `__repr__`, `__eq__`, `__setattr__` and
`__delattr__` for each class (about 1 ms per class on these machines, plus importing
`inspect` for it): for the two dozen value classes on a command's path that was a tenth of a
`vdi_snapshot` process. A `Frozen` subclass declares its fields as annotations, with class
attributes as defaults, and shares one generic implementation of those methods:

    class VdiRef(Frozen):
        uuid: str
        location: str

Fields are positional in declaration order (inherited ones first) or by keyword
(`class R(Frozen, kw_only=True)`: by keyword only, as every subclass must then say); instances
are immutable, compare and hash by value, and `replace(**changes)` / `as_dict()` stand in for
`dataclasses.replace` / `asdict` (one level: values are not converted). Defaults are shared
between instances, so a default must be immutable (a `MappingProxyType`, a tuple, None).
A `__post_init__` method, if defined, runs after the fields are set. Type checkers see the
class as a dataclass (`dataclass_transform`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self, dataclass_transform

__all__ = ["Frozen"]


@dataclass_transform(frozen_default=True)
class Frozen:
    _names: ClassVar[tuple[str, ...]] = ()
    _name_set: ClassVar[frozenset[str]] = frozenset()
    _required: ClassVar[frozenset[str]] = frozenset()
    _hidden: ClassVar[frozenset[str]] = frozenset()
    """Fields left out of `repr` (bulky or secret)."""

    _kw_only: ClassVar[bool] = False

    def __init_subclass__(cls, *, kw_only: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._kw_only = kw_only
        # the class's own annotations (inspect.get_annotations would import inspect)
        own = [n for n, t in cls.__dict__.get("__annotations__", {}).items()  # noqa: RUF063
               if "ClassVar" not in str(t) and n not in cls._names]
        cls._names = cls._names + tuple(own)
        cls._name_set = frozenset(cls._names)
        cls._required = frozenset(n for n in cls._names if not hasattr(cls, n))

    def __init__(self, *args: Any, **values: Any) -> None:
        names = self._names
        if args:
            if self._kw_only:
                raise TypeError(f"{type(self).__name__} takes keyword arguments only")
            if len(args) > len(names):
                raise TypeError(f"{type(self).__name__} takes {len(names)} fields, "
                                f"got {len(args)} positional values")
            for name, value in zip(names, args, strict=False):
                if name in values:
                    raise TypeError(f"{type(self).__name__} got two values for {name!r}")
                values[name] = value
        if not self._required.issubset(values):
            missing = ", ".join(sorted(self._required.difference(values)))
            raise TypeError(f"{type(self).__name__} is missing {missing}")
        if not self._name_set.issuperset(values):
            unknown = ", ".join(sorted(set(values).difference(names)))
            raise TypeError(f"{type(self).__name__} has no field {unknown}")
        self.__dict__.update(values)
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self._names)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated like a new instance)."""
        return type(self)(**self.as_dict() | changes)

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._names}

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._names
                          if n not in self._hidden)
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.as_dict()))


def _rebuild(cls: type[Frozen], values: dict[str, Any]) -> Frozen:
    return cls(**values)
