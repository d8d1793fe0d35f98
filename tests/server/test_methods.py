"""How XML-RPC parameters bind to StorageManager methods (sm.server.methods), against the real
StorageManager signatures; the server tests cover the calls end to end."""

from __future__ import annotations

import pytest

from sm.api import StorageManager
from sm.errors import InvalidArg, Unimplemented
from sm.server import methods


def real(name: str, *params: object) -> tuple[list[object], dict[str, object]]:
    sm = StorageManager.__new__(StorageManager)
    return methods._bind(getattr(sm, methods.API_METHODS[name]), name, list(params))


def test_trailing_struct_is_the_keyword_options() -> None:
    assert real("vdi.revert", "d", "s", {"safety": True}) == (["d", "s"], {"safety": True})
    assert real("vdi.list", {"hidden": True}) == ([], {"hidden": True})
    assert real("vdi.list", "fast") == (["fast"], {})
    assert real("vm.snapshot", "vm", "n", "", {"for_export": True}) == (
        ["vm", "n", ""], {"for_export": True})


def test_a_mapping_parameter_stays_positional() -> None:
    dc = {"location": "/srv/x"}
    assert real("sr.create", "x", "file", dc) == (["x", "file", dc], {})
    assert real("sr.create", "x", "file", dc, {"size": "0"}) == (["x", "file", dc],
                                                                 {"size": 0})


def test_integers_as_strings_and_bad_arguments() -> None:
    assert real("vdi.create", "68719476736", "big") == ([68719476736, "big"], {})
    assert real("vdi.read", "d", "0", "512") == (["d", 0, 512], {})
    with pytest.raises(InvalidArg):
        real("vdi.revert", "d")  # missing the snapshot
    with pytest.raises(InvalidArg):
        real("vdi.delete", "d", {"nope": 1})


def test_method_table_names_real_methods() -> None:
    for name, attr in methods.API_METHODS.items():
        assert callable(getattr(StorageManager, attr)), name
    with pytest.raises(Unimplemented):
        methods.call(lambda: StorageManager.__new__(StorageManager), "vdi.nope", [])
    assert methods.to_wire({"a": (1, None, b"x")}) == {"a": [1, None, b"x"]}
