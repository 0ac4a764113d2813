"""Turbo's paralinguistic tags (issue 14, part 3): where the list comes from, the
splitter never cutting one, and the dashboard's buttons and warning."""
from __future__ import annotations

import json
import random
import re
from importlib import metadata

import pytest

from cbx import tags
from cbx.text import split_text
from tests.support.dashboard import make, make_controller
from tests.support.fake_backend import backend, env  # noqa: F401 - fixtures

REAL_LAYOUT_TAGS = ["[clear throat]", "[laugh]", "[sigh]"]


def _write_turbo_tokenizer(folder, added: list[str]) -> None:
    """tokenizer.json as Hugging Face writes it: added tokens next to GPT-2's own."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = [{"id": 50256, "content": "<|endoftext|>", "special": True}]
    entries += [{"id": 50257 + i, "content": tag, "special": False}
                for i, tag in enumerate(added)]
    (folder / "tokenizer.json").write_text(json.dumps({"added_tokens": entries}),
                                           encoding="utf-8")


# ----------------------------------------------------------------------- the list

def test_tags_come_from_turbos_tokenizer_when_it_is_downloaded(tmp_path):
    _write_turbo_tokenizer(tmp_path / "turbo", REAL_LAYOUT_TAGS + ["[laugh]"])
    assert tags.turbo_tags(tmp_path) == ("[clear throat]", "[laugh]", "[sigh]")


@pytest.mark.parametrize("name, content", [
    ("tokenizer_config.json", {"added_tokens_decoder": {
        "50256": {"content": "<|endoftext|>"}, "50257": {"content": "[gasp]"}}}),
    ("added_tokens.json", {"[gasp]": 50257, "<|endoftext|>": 50256}),
])
def test_tags_from_the_other_tokenizer_layouts(tmp_path, name, content):
    (tmp_path / "turbo").mkdir()
    (tmp_path / "turbo" / name).write_text(json.dumps(content), encoding="utf-8")
    assert tags.turbo_tags(tmp_path) == ("[gasp]",)


def test_without_turbo_weights_the_installed_package_names_the_tags(tmp_path):
    description = metadata.metadata("chatterbox-tts").get_payload()
    found = tags.turbo_tags(tmp_path / "nothing here")
    assert "[laugh]" in found and "[cough]" in found and "[chuckle]" in found
    assert all(f"`{tag}`" in description for tag in found)
    # a damaged tokenizer file falls back the same way instead of failing the page
    (tmp_path / "turbo").mkdir()
    (tmp_path / "turbo" / "tokenizer.json").write_text("{not json", encoding="utf-8")
    assert tags.turbo_tags(tmp_path) == found


def test_only_turbo_has_tags(tmp_path):
    _write_turbo_tokenizer(tmp_path / "turbo", REAL_LAYOUT_TAGS)
    assert tags.variant_tags("turbo", tmp_path) == tuple(REAL_LAYOUT_TAGS)
    assert tags.variant_tags("original", tmp_path) == ()
    assert tags.variant_tags("multilingual", tmp_path) == ()


# ------------------------------------------------------------------- splitting

def _tag_texts(seed: int) -> str:
    rng = random.Random(seed)
    words = ["well", "I", "suppose", "so.", "Really?", "that,", "is", "extraordinary",
             "ha!", "onomatopoeiaonomatopoeia"]
    out = []
    for _ in range(rng.randint(5, 60)):
        out.append(rng.choice(words + REAL_LAYOUT_TAGS))
        if rng.random() < 0.1:      # a tag glued to a word, as people type them
            out[-1] += rng.choice(REAL_LAYOUT_TAGS)
    return " ".join(out)


@pytest.mark.parametrize("seed", range(40))
def test_the_splitter_never_cuts_a_tag(seed):
    text = _tag_texts(seed)
    expected = tags.find_tags(text)
    for max_chars in (1, 5, 9, 14, 20, 37, 80, 300):
        for first in (None, 10):
            chunks = split_text(text, max_chars, first_chunk_chars=first)
            assert [t for c in chunks for t in tags.find_tags(c)] == expected, \
                (max_chars, chunks)
            assert "".join(chunks).replace(" ", "") == text.replace(" ", "")
            # nothing but whole tags breaks the limit
            for chunk in chunks:
                if len(chunk) > max_chars:
                    assert any(len(t) > max_chars for t in tags.find_tags(chunk)), chunk


def test_a_tag_with_a_space_stays_one_piece_at_a_word_split():
    chunks = split_text("Well [clear throat] I suppose that is that, really and truly so",
                        16, first_chunk_chars=None)
    assert "[clear throat]" in chunks[0] or "[clear throat]" in chunks[1]
    assert not any(re.search(r"\[clear$|^throat\]", c) for c in chunks)


# ------------------------------------------------------------------- dashboard

def test_turbo_offers_its_tags_and_other_variants_none(backend, tmp_path):
    _write_turbo_tokenizer(backend.model_dir / "turbo", REAL_LAYOUT_TAGS)
    c, events = make_controller(backend)
    assert c.tags == ()
    c.set_variant("turbo")
    assert c.tags == tuple(REAL_LAYOUT_TAGS) and "text" in events
    c.set_variant("multilingual")
    assert c.tags == ()


def test_other_variants_warn_that_tags_are_read_aloud(backend):
    c, _ = make_controller(backend)
    c.set_text("Hello there.")
    assert c.tag_warning == ""
    c.set_text("Hello [laugh] there [cough] and [laugh] [sigh] [gasp].")
    warning = c.tag_warning
    assert "aloud" in warning and "Chatterbox-Turbo" in warning
    assert "[laugh], [cough], [sigh], ..." in warning          # each once, first three
    assert "[Narrator]" not in c.tag_warning                    # only tag-shaped groups
    c.set_variant("turbo")
    assert c.tag_warning == ""
    c.set_variant("multilingual")
    assert "Chatterbox-Multilingual" in c.tag_warning
    c.set_text("A footnote [1] and a [Name].")
    assert c.tag_warning == ""


def test_view_shows_tag_buttons_for_turbo_and_the_warning_otherwise(backend):
    pytest.importorskip("ipywidgets")
    _write_turbo_tokenizer(backend.model_dir / "turbo", REAL_LAYOUT_TAGS)
    view = make(backend)
    assert view.tag_box.layout.display == "none" and view.tag_bar.groups == []
    view.text.value = "Ha [laugh] ha."
    assert "read" in view.tag_warning.value and "[laugh]" in view.tag_warning.value
    view.variant.value = "turbo"
    assert view.tag_box.layout.display is None
    assert view.tag_bar.groups == [["Sounds", REAL_LAYOUT_TAGS]]
    assert view.tag_bar.target == "cbx-text"
    assert "cbx-text" in view.text._dom_classes     # the bar's target is the text box
    assert view.tag_warning.value == ""
    view.variant.value = "original"
    assert view.tag_box.layout.display == "none" and "[laugh]" in view.tag_warning.value


def test_the_bar_groups_turbos_sounds_apart_from_its_deliveries():
    """Turbo's tokenizer has 19 tags: 9 sounds, 10 that set how a line is spoken."""
    deliveries = ["[advertisement]", "[angry]", "[crying]", "[dramatic]", "[fear]",
                  "[happy]", "[narration]", "[sarcastic]", "[surprised]", "[whispering]"]
    found = sorted(tags.SOUND_TAGS) + deliveries
    assert tags.tag_groups(sorted(found)) == [["Sounds", sorted(tags.SOUND_TAGS)],
                                              ["Delivery", deliveries]]
    assert len(tags.SOUND_TAGS) == 9
    assert tags.tag_groups(["[whispering]"]) == [["Delivery", ["[whispering]"]]]
    assert tags.tag_groups([]) == []


# ------------------------------------------------------- the button in a browser

PAGE = """<div class="cbx-app">
  <div class="cbx-text"><textarea></textarea></div><div id="bar"></div>
</div>"""

MOUNT = """async ([esm, groups]) => {
  const url = URL.createObjectURL(new Blob([esm], {type: "text/javascript"}));
  const module = await import(url);
  const values = {groups, target: "cbx-text", disabled: false};
  const model = {get: (name) => values[name], on: () => {}};
  window.inputs = 0;
  document.querySelector("textarea").addEventListener("input", () => window.inputs++);
  module.default.render({model, el: document.getElementById("bar")});
}"""


@pytest.mark.e2e
def test_tag_button_inserts_at_the_cursor_in_chromium():
    """The anywidget's own JavaScript in Chromium: the tag goes where the cursor is (or
    replaces the selection), spaced from touching words, and the Textarea's view hears
    an `input` event, as for a keystroke, so the kernel gets the new text."""
    from cbx.dev.pageserver import CHROMIUM, CHROMIUM_ARGS
    from cbx.ui.tagbar import ESM
    from tests.support.browser import require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_content(PAGE)
            page.evaluate(MOUNT, [ESM, tags.tag_groups(REAL_LAYOUT_TAGS + ["[whispering]"])])
            assert page.locator(".cbx-tag-group-label").all_inner_texts() == \
                ["Sounds", "Delivery"]
            area = page.locator("textarea")
            area.fill("Hello there friend")
            page.evaluate("window.inputs = 0")                   # fill() typed too
            area.evaluate("a => a.setSelectionRange(5, 5)")      # after "Hello"
            page.get_by_role("button", name="[laugh]").click()
            assert area.input_value() == "Hello [laugh] there friend"
            assert area.evaluate("a => [a.selectionStart, document.activeElement === a]") \
                == [len("Hello [laugh]"), True]
            area.evaluate("a => a.setSelectionRange(14, 19)")    # select "there"
            page.get_by_role("button", name="[clear throat]").click()
            assert area.input_value() == "Hello [laugh] [clear throat] friend"
            area.evaluate("a => a.setSelectionRange(a.value.length, a.value.length)")
            page.get_by_role("button", name="[sigh]").click()
            assert area.input_value() == "Hello [laugh] [clear throat] friend [sigh]"
            assert page.evaluate("window.inputs") == 3
        finally:
            browser.close()
