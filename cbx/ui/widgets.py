"""What every card of the page builds with: buttons, HTML lines, the card box, the
speech-rate slider, the audio slot, and `Sync`, the one way a widget tells the
controller what the user changed.
"""
from __future__ import annotations

import threading
from typing import Callable

from ..settings import SPEECH_RATE

DESCRIPTION_STYLE = {"description_width": "110px"}


def full_width(w):
    """A Layout of its own for each widget: hiding one hides every widget sharing it."""
    return w.Layout(width="100%")


def button(w, description: str, icon: str, css_class: str, on_click, layout="110px",
           **style):
    """A button that calls `on_click()`; `layout` a Layout, or a width for one of its own."""
    if isinstance(layout, str):
        layout = w.Layout(width=layout)
    widget = w.Button(description=description, icon=icon, layout=layout, **style)
    if css_class:
        widget.add_class(css_class)
    widget.on_click(lambda _b: on_click())
    return widget


def html(w, css_class: str = "", value: str = ""):
    widget = w.HTML(value)
    if css_class:
        widget.add_class(css_class)
    return widget


def card(w, title: str, *children, css_class: str = ""):
    """One card of the page: a title over its widgets."""
    box = w.VBox([w.HTML(f"<h3>{title}</h3>"), *children], layout=w.Layout(width="100%"))
    box.add_class("cbx-card")
    if css_class:
        box.add_class(css_class)
    return box


def rate_slider(w, value: float, css_class: str, description: str = SPEECH_RATE.label):
    """A speech-rate slider from the one SPEECH_RATE row (one-off and export alike)."""
    slider = w.FloatSlider(description=description, min=SPEECH_RATE.low,
                           max=SPEECH_RATE.high, step=SPEECH_RATE.step, value=value,
                           readout_format=".2f", continuous_update=False,
                           tooltip=SPEECH_RATE.help, style=DESCRIPTION_STYLE,
                           layout=full_width(w))
    slider.add_class(css_class)
    return slider


class Sync:
    """Tells a change the user made from one the view makes while it redraws.

    Why: redrawing sets widget values (the text box, the sliders, the voice picker),
    and a widget reports every new value; only the user's own changes must reach the
    controller, or a redraw would echo the controller's state back into it."""

    def __init__(self):
        self._local = threading.local()      # per thread: is the view redrawing?

    def bind(self, widget, action: Callable[[object], None]) -> None:
        """Call `action(new value)` when the user changes `widget`."""
        def changed(change) -> None:
            if not getattr(self._local, "redrawing", False):
                action(change["new"])

        widget.observe(changed, names="value")

    def redraw(self, draw: Callable[[], None]) -> None:
        """Run `draw()`; the widget changes it makes are not the user's."""
        self._local.redrawing = True
        try:
            draw()
        finally:
            self._local.redrawing = False


class AudioSlot:
    """The place of one player on the page: an `<audio>` element exists there only while
    it holds real audio.

    Why: an element without audio still costs the browser. ipywidgets' `Audio` loops by
    default, a looping zero-length source restarts for ever, and an empty value is a
    source the browser rejects; so nothing stands in the slot until there is something
    to play, and nothing loops. Each new sound gets a new widget, so identical bytes
    load again too."""

    def __init__(self, w, css_class: str, height: str, autoplay: bool = False):
        """`autoplay`: a player filled by a Play click starts at once."""
        self._w = w
        self._css_class = css_class
        self._height = height
        self._autoplay = autoplay
        self.player = None
        self.box = w.Box(layout=w.Layout(width="100%"))

    @property
    def value(self) -> bytes:
        return self.player.value if self.player is not None else b""

    def show(self, data: bytes, fmt: str = "wav") -> None:
        if not data:
            self.clear()
            return
        w = self._w
        player = w.Audio(value=data, format=fmt, autoplay=self._autoplay, loop=False,
                         controls=True, layout=w.Layout(width="100%", height=self._height))
        player.add_class(self._css_class)
        old, self.player = self.player, player
        self.box.children = (player,)
        if old is not None:
            old.close()

    def clear(self) -> None:
        """Remove the player: a media element taken out of the page stops playing."""
        old, self.player = self.player, None
        if old is not None:
            self.box.children = ()
            old.close()


__all__ = ["AudioSlot", "Sync", "button", "html", "card", "rate_slider", "full_width",
           "DESCRIPTION_STYLE"]
