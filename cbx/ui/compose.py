"""An object made of small parts that answers for them.

Why: the dashboard is split into a session and one small part per card, yet callers
(notebooks, tests, the cards of the view) name what they want, `c.generate()` or
`view.text`, without knowing which part owns it. Each public name that exactly one part
has is read and written on that part; a name two parts share (their `session`, their
`box`) is not answered, so a lookup is never ambiguous: ask the part itself.
"""
from __future__ import annotations


def _public_names(part) -> set[str]:
    """What `part` offers: its attributes and its class's methods and properties."""
    return {name for name in {*vars(part), *dir(type(part))} if not name.startswith("_")}


class Composed:
    """Call `compose(*parts)` at the end of `__init__`; see the module's docstring."""

    def compose(self, *parts) -> None:
        owners: dict[str, object] = {}
        shared: set[str] = set()
        for part in parts:
            for name in _public_names(part):
                if name in owners:
                    shared.add(name)
                owners[name] = part
        object.__setattr__(self, "_owners",
                           {name: part for name, part in owners.items()
                            if name not in shared})

    def __getattr__(self, name: str):
        """Only called for names the object itself lacks."""
        owner = self.__dict__.get("_owners", {}).get(name)
        if owner is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(owner, name)

    def __setattr__(self, name: str, value) -> None:
        owner = self.__dict__.get("_owners", {}).get(name)
        if owner is None:
            object.__setattr__(self, name, value)
        else:
            setattr(owner, name, value)


__all__ = ["Composed"]
