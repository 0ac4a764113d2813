"""The composed objects of the page (controller, view) answer for their parts: a name
exactly one part has is read and written there; a name two parts share is not answered,
so no lookup silently picks one of them."""
from __future__ import annotations

import pytest

from cbx.ui.compose import Composed


class Part:
    def __init__(self, label: str, **values):
        self.label = label          # every part has one: shared, so never answered
        self.__dict__.update(values)

    def shout(self) -> str:
        return self.label.upper()


class Whole(Composed):
    def __init__(self):
        self.own = "mine"
        self.first = Part("first", count=1)
        self.second = Part("second", size=2)
        self.compose(self.first, self.second)


def test_a_name_one_part_has_is_read_and_written_on_that_part():
    whole = Whole()
    assert (whole.count, whole.size, whole.own) == (1, 2, "mine")
    whole.count = 5
    assert whole.first.count == 5 and "count" not in vars(whole)
    whole.own = "changed"
    assert vars(whole)["own"] == "changed", "the object's own names stay its own"


def test_a_name_two_parts_share_is_not_answered():
    whole = Whole()
    for shared in ("label", "shout"):
        with pytest.raises(AttributeError, match=shared):
            getattr(whole, shared)
    with pytest.raises(AttributeError, match="missing"):
        whole.missing


def test_the_controller_answers_for_the_session_and_each_cards_actions(tmp_path):
    from tests.support.dashboard import make_controller
    from tests.support.fake_backend import FakeBackend

    c, _events = make_controller(FakeBackend(tmp_path / "models", tmp_path / "outputs"))
    c.seed_text = "7"
    assert c.session.seed_text == "7", "page state is written to the session"
    assert c.generate == c.generation_actions.generate
    assert c.load == c.model_actions.load and c.set_text == c.text_actions.set_text
