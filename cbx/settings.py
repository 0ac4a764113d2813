"""The generation settings and load options, each declared once.

Why one table: `speak()` validates a setting against the same range and the dashboard
builds the same setting's slider from it, so the two can never disagree (they did:
temperature allowed 5.0 in one and 2.0 in the other). Each variant's default values
live with the variant (variants.py); what a setting is lives here.

Layer 1: standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str       # the keyword of speak() and of chatterbox's generate()
    label: str      # the dashboard's slider label
    low: float
    high: float
    step: float     # the slider's step
    help: str       # the slider's tooltip


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("exaggeration", "Exaggeration", 0.0, 2.0, 0.05,
            "Emotion intensity: 0.5 is neutral, higher is more dramatic."),
    Setting("cfg_weight", "CFG / pace", 0.0, 1.0, 0.05,
            "How closely delivery follows the reference; lower is slower and calmer."),
    Setting("temperature", "Temperature", 0.05, 5.0, 0.05,
            "Randomness of the speech tokens; higher is more varied."),
    Setting("min_p", "min_p", 0.0, 1.0, 0.01,
            "Drops tokens below this share of the best one."),
    Setting("top_p", "top_p", 0.0, 1.0, 0.01,
            "Samples only from the most likely tokens up to this mass."),
    Setting("repetition_penalty", "Repetition penalty", 1.0, 3.0, 0.05,
            "Discourages repeated sounds; raise it if words loop."),
)}
ALL_SETTINGS = tuple(SETTINGS)

# Not a chatterbox setting: applied to the audio after generation (cbx.audio.stretch),
# so it never reaches generate(). speak(rate=), a project's export(rate=) and the
# dashboard's slider all read this one row.
SPEECH_RATE = Setting("rate", "Speech rate", 0.5, 2.0, 0.05,
                      "Faster or slower speech at the same pitch (1 = as generated).")

# Precisions a model can be loaded in (the dashboard's choices, load()'s check).
# "int8": T3's transformer with dynamically quantized int8 Linear layers, CPU only
# (envcheck.check_precision); the rest of the model stays float32.
DTYPES = ("float32", "float16", "bfloat16", "int8")
# Devices the dashboard offers ("auto": CUDA, then Apple MPS, then CPU).
DEVICES = ("auto", "cuda", "cpu")
