"""sm.struct.Frozen: the value-class base that replaces dataclasses on the driver's path."""

from __future__ import annotations

import pickle
from types import MappingProxyType

import pytest

from sm.struct import Frozen


class Point(Frozen):
    x: int
    y: int = 0


class Named(Point, kw_only=True):
    name: str
    tags: tuple[str, ...] = ()
    _hidden = frozenset({"tags"})


class Checked(Frozen):
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


def test_fields_defaults_and_order() -> None:
    assert Point(1).y == 0
    assert Point(1, 2) == Point(x=1, y=2)
    assert Named(x=1, name="a")._names == ("x", "y", "name", "tags")


def test_missing_unknown_and_duplicate_fields_are_refused() -> None:
    with pytest.raises(TypeError, match="missing x"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="no field z"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="two values"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes 2 fields"):
        Point(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="keyword arguments only"):
        Named(1, 2, "a")  # type: ignore[misc]


def test_immutable() -> None:
    p = Point(1)
    with pytest.raises(AttributeError, match="immutable"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del p.x  # type: ignore[misc]
    assert p.x == 1


def test_eq_hash_repr() -> None:
    assert Point(1, 2) != Point(2, 1)
    assert Point(1) != Named(x=1, name="")  # another class is never equal
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert repr(Named(x=1, name="a", tags=("t",))) == "Named(x=1, y=0, name='a')"


def test_replace_validates_and_as_dict() -> None:
    c = Checked(1)
    assert c.replace(n=5) == Checked(5)
    with pytest.raises(ValueError):
        c.replace(n=-1)
    with pytest.raises(TypeError, match="no field"):
        c.replace(m=1)
    assert Point(1, 2).as_dict() == {"x": 1, "y": 2}


def test_pickle_round_trip() -> None:
    n = Named(x=1, name="a", tags=("t",))
    assert pickle.loads(pickle.dumps(n)) == n


def test_post_init_may_normalise() -> None:
    class Frozenmap(Frozen):
        m: object

        def __post_init__(self) -> None:
            object.__setattr__(self, "m", MappingProxyType(dict(self.m)))  # type: ignore[call-overload]

    assert isinstance(Frozenmap({"a": "b"}).m, MappingProxyType)

