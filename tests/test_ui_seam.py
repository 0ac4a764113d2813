"""The seam between the dashboard and cbx (issue 9): the real backend and the tests'
fake implement the same `Backend` protocol, method for method, so a widget test that
passes with the fake exercises the calls the real page makes."""
from __future__ import annotations

import inspect

import pytest

pytest.importorskip("ipywidgets")

from cbx.ui.backend import Backend, CbxBackend  # noqa: E402
from tests.support.fake_backend import FakeBackend  # noqa: E402


def _methods(cls) -> dict[str, list[str]]:
    """Public methods `cls` defines itself (not the protocol's placeholders it inherits)."""
    return {name: list(inspect.signature(member).parameters)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
            and (cls is Backend or member is not getattr(Backend, name, None))}


@pytest.mark.parametrize("implementation", [CbxBackend, FakeBackend])
def test_backends_implement_the_protocol_method_for_method(implementation):
    assert Backend in implementation.__mro__, "fakes subclass the real interface"
    protocol, ours = _methods(Backend), _methods(implementation)
    missing = set(protocol) - set(ours)
    assert not missing, f"{implementation.__name__} lacks {sorted(missing)}"
    for name, parameters in protocol.items():
        assert ours[name][:len(parameters)] == parameters or "kwargs" in parameters, \
            f"{implementation.__name__}.{name}{ours[name]} != protocol {parameters}"
    extra = set(ours) - set(protocol)
    assert not extra or implementation is FakeBackend, \
        f"the real backend offers {sorted(extra)} outside the protocol"
