"""Audio blocks made while T3 is still producing a chunk's tokens (token-level
streaming), joined so that they play as one recording.

Why: a listener waits for the first sound, not the last.  Without this the first audio
comes when a whole chunk's tokens are made and turned into a waveform.  Here S3Gen
turns a window of the tokens made so far into audio as soon as a few are there (the
first block after ``FIRST_BLOCK_TOKENS``, about 0.8 s of speech), and again each time
the count has grown by ``BLOCK_GROWTH`` times, so the number of extra S3Gen calls grows
with the logarithm of the chunk's length.

S3Gen's flow runs over the voice prompt and the new tokens together (its attention sees
the whole of both), so with the whole 10 s prompt a 20-token window costs as much as a
9 s chunk (11.3 s on a 2-core CPU, most of the time to first audio).  A window
therefore reads only ``WINDOW_PROMPT_TOKENS`` (3 s) of the prompt, the span of the
reference with the most speech in it (`window_prompt`), and the speaker embedding of
the whole clip (4.2 s on the same CPU).  Upstream itself takes reference clips that
short; the chunk's own end still comes from upstream's full call with the whole prompt.

Even so a window costs a good part of an S3Gen call, so windows are made only where they
buy something: the first one of the whole text always (first audio), the others only
while tokens come at least as fast as speech plays (``REALTIME_TOKENS_PER_SECOND``),
i.e. where they keep playback from running dry.  On a device slower than real time
playback runs dry anyway, and more windows would only make the whole text later.

How a window joins the audio before it:

* it starts ``CONTEXT_TOKENS`` before the audio already sent, so S3Gen sees what came
  before (that context's audio, and S3Gen's own 40 ms fade-in, are dropped);
* its last ``HOLD_TOKENS`` (S3Gen's 3-token lookahead and one more) are held back: the
  next window, which sees what follows them, makes them again;
* at each join the held tail and the new audio are cross-faded over ``FADE_SAMPLES``
  (raised-cosine weights that sum to one: both are renderings of the same tokens), so
  there is no click and no sample is repeated or dropped;
* the rest of the chunk comes from upstream's own full-chunk waveform (the one
  ``speak()`` returns), so a chunk's streamed audio differs from ``speak()``'s only in
  the windows made early, and its length is exactly ``speak()``'s.

S3Gen draws random numbers; a window is made under ``torch.random.fork_rng`` so the
tokens T3 samples afterwards, and the chunk's final audio, are those ``speak()`` makes.

Layer 4 (beside synth.py); numpy and torch are imported inside functions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

FIRST_BLOCK_TOKENS = 20     # 0.8 s of speech: the first block
BLOCK_GROWTH = 2            # each later window when the token count has doubled
CONTEXT_TOKENS = 8          # tokens of earlier speech a window starts with
HOLD_TOKENS = 4             # tokens at a window's end left for the next one
FADE_SAMPLES = 480          # 20 ms at 24 kHz
SAMPLES_PER_TOKEN = 960     # S3 tokens are 25 per second; S3Gen writes 24 kHz
SPEECH_VOCAB = 6561         # ids at or above this are not speech (upstream drops them)
REALTIME_TOKENS_PER_SECOND = 25   # tokens per second of speech
WINDOW_PROMPT_TOKENS = 75   # 3 s of the voice prompt for a window (the whole: up to 10 s)
MEL_FRAMES_PER_TOKEN = 2    # S3Gen's prompt_feat has two mel frames per prompt token


def window_prompt(gen: dict, tokens: int = WINDOW_PROMPT_TOKENS) -> dict:
    """S3Gen's `ref_dict` for a window: the `tokens` of the voice prompt whose mel
    frames carry the most energy (a span of speech, not a trailing pause), with their
    frames, and the whole clip's speaker embedding.  Why: the window's cost grows with
    the prompt's length (see the module's docstring)."""
    import torch

    prompt, feat = gen["prompt_token"], gen["prompt_feat"]
    count = prompt.shape[1]
    if count <= tokens or feat.shape[1] < MEL_FRAMES_PER_TOKEN * count:
        return gen
    level = feat[0, :MEL_FRAMES_PER_TOKEN * count].float().mean(dim=-1)   # log-mel
    per_token = level.reshape(count, MEL_FRAMES_PER_TOKEN).sum(dim=1)
    start = int(torch.argmax(per_token.unfold(0, tokens, 1).sum(dim=1)))
    frames = slice(MEL_FRAMES_PER_TOKEN * start, MEL_FRAMES_PER_TOKEN * (start + tokens))
    return {**gen, "prompt_token": prompt[:, start:start + tokens],
            "prompt_token_len": torch.full_like(gen["prompt_token_len"], tokens),
            "prompt_feat": feat[:, frames], "prompt_feat_len": None}


@dataclass(frozen=True)
class AudioBlock:
    """A piece of the final audio, ready to play: `wav` (float32 mono) at `sample_rate`,
    from text chunk `chunk` (1-based), starting `start_s` seconds into the whole
    result; `last` marks the final block of the whole text."""

    wav: object
    sample_rate: int
    chunk: int
    start_s: float
    last: bool

    @property
    def duration(self) -> float:
        return len(self.wav) / float(self.sample_rate)


class BlockMaker:
    """Makes one chunk's blocks: `on_tokens` from inside T3's loop, `finish` with the
    chunk's full waveform.  `emit(wav, last_of_chunk)` receives contiguous audio."""

    def __init__(self, tts, conds, variant: str, emit, stop_token: int, first: bool):
        self.tts, self.conds, self.variant = tts, conds, variant
        self.emit, self.stop_token = emit, stop_token
        self.first = first          # the text's first chunk: its first window is a must
        self.next_at = FIRST_BLOCK_TOKENS
        self.started = None         # when the chunk's first token came
        self.sent_tokens = 0        # audio up to this token has been emitted
        self.tail = None            # FADE_SAMPLES past it, from the last window
        self.windows = 0

    def on_tokens(self, tokens, made: int) -> None:
        """Called after every sampled token with a view of the chunk's tokens so far
        (on the model's device); reads them back only when a block is due."""
        if self.started is None:
            self.started = time.perf_counter()
        if made < self.next_at:
            return
        self.next_at = made * BLOCK_GROWTH
        if not (self.first and self.windows == 0) and not self._keeping_up(made):
            return
        ids = tokens[:made].tolist()
        keep_to = made - HOLD_TOKENS
        if keep_to <= self.sent_tokens or self.stop_token in ids or \
                max(ids) >= SPEECH_VOCAB:
            return       # the model is stopping: the full waveform comes next anyway
        start = max(0, self.sent_tokens - CONTEXT_TOKENS)
        wav = self._window(ids[start:made])
        first = (self.sent_tokens - start) * SAMPLES_PER_TOKEN
        end = (keep_to - start) * SAMPLES_PER_TOKEN
        self._send(wav[first:end + FADE_SAMPLES], last=False)
        self.sent_tokens = keep_to
        self.windows += 1

    def _keeping_up(self, made: int) -> bool:
        elapsed = time.perf_counter() - self.started
        return elapsed <= 0 or (made - 1) / elapsed >= REALTIME_TOKENS_PER_SECOND

    def finish(self, wav) -> None:
        """The chunk's full waveform (upstream's): what was not sent yet, joined on."""
        self._send(wav[self.sent_tokens * SAMPLES_PER_TOKEN:].copy(), last=True)

    def _window(self, ids: list[int]):
        import torch

        tts = self.tts
        devices = [tts.device] if str(tts.device).startswith("cuda") else []
        tokens = torch.tensor(ids, dtype=torch.long, device=tts.device)
        if self.variant == "turbo":      # as ChatterboxTurboTTS.generate calls S3Gen
            options = {"n_cfm_timesteps": 2}
        else:
            options = {}
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            wav, _ = tts.s3gen.inference(speech_tokens=tokens,
                                         ref_dict=window_prompt(self.conds.gen),
                                         **options)
            wav = wav.squeeze(0).detach().cpu().numpy()
            wav = tts.watermarker.apply_watermark(wav, sample_rate=tts.sr)
        return wav.astype("float32")

    def _send(self, audio, last: bool) -> None:
        import numpy as np

        audio = np.asarray(audio, dtype=np.float32)
        if self.tail is not None:
            n = min(len(self.tail), len(audio))
            rise = np.sin(np.linspace(0.0, np.pi / 2, n, dtype=np.float32)) ** 2
            audio[:n] = self.tail[:n] * (1.0 - rise) + audio[:n] * rise
        if last:
            body, self.tail = audio, None
        else:
            body, self.tail = audio[:-FADE_SAMPLES], audio[-FADE_SAMPLES:].copy()
        self.emit(body, last)
