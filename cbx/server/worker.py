"""The one thread that speaks for the server, fed by a bounded queue: the server's one
seam to the engine (like the dashboard's backend.py).

Why one thread: the process holds one model, and the model manager lets one
generation run at a time (a second gets model_busy rather than waiting), so requests
wait their turn in the queue instead; a full queue is refused at once (429 with
Retry-After) rather than left to time out. A request alone speaks through `cbx.speak`
with `on_block`, the one synthesis path, and each block is encoded as it comes and
handed to the request's event loop. Requests that wait together and are one chunk each
(a sentence, as Open WebUI and Home Assistant send them) are made together by
`engine.synth.speak_together`: one batch of T3 steps, each with its own voice,
settings and seed, so eight clients wait about one request's time rather than eight.
Each request's cancel token stops it (at the next token or S3Gen stage) when its
client goes away.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

from .. import errors
from .encoding import Encoder
from .errors import QueueFull, unexpected

log = logging.getLogger("cbx.server")

GROUP_LIMIT = 16      # requests served as one at most (the engine splits by free memory)


@dataclass
class Job:
    """One speech request: what to say and how, its encoder, where its events go.

    `emit(kind, value)` is called from the worker thread: ("data", bytes) for each
    piece of the response, then ("done", Result) or ("error", CbxError)."""

    text: str
    voice: object                 # a saved voice's name, or None for the built-in one
    options: dict                 # cbx.speak's keyword arguments
    make_encoder: object          # sample rate -> the response's Encoder
    emit: object
    cancel: object = None         # a cbx.CancelToken, made by the worker when None
    encoder: Encoder | None = None    # made at the first block, at the model's rate

    def on_block(self, block) -> None:
        if self.encoder is None:
            self.encoder = self.make_encoder(block.sample_rate)
        data = self.encoder.feed(block.wav)
        if data:
            self.emit("data", data)

    def finish(self, result) -> None:
        """The encoder's last bytes, then "done"."""
        if self.encoder is None:          # no block came: the audio is empty
            self.encoder = self.make_encoder(result.sample_rate)
        tail = self.encoder.finish()
        if tail:
            self.emit("data", tail)
        self.emit("done", result)

    def deliver(self, result) -> None:
        """A result made whole (in a group): its audio in one piece, then "done"."""
        self.encoder = self.make_encoder(result.sample_rate)
        data = self.encoder.feed(result.wav)
        if data:
            self.emit("data", data)
        self.finish(result)

    def one_chunk(self) -> bool:
        """Whether speak() would make this text in one chunk (so it can share a batch)."""
        from ..text import split_text

        try:
            return len(split_text(self.text)) == 1
        except errors.CbxError:           # speak() says what is wrong with it
            return False


class SpeechWorker:
    """Runs jobs on its own thread, one at a time or a waiting group at once; `submit`
    refuses when `queue_size` jobs already wait."""

    def __init__(self, queue_size: int, device: str = "auto"):
        self.device = device
        self.queue_size = queue_size
        self._waiting: collections.deque = collections.deque()
        self._changed = threading.Condition()    # guards _waiting and _stopping
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._current: list[Job] = []
        self.served = 0
        self.largest_group = 0
        self.groups = True        # False under CBX_BATCH=1: every request alone, streamed
        self._seconds: list[float] = []     # recent job durations, for Retry-After

    # ------------------------------------------------------------- lifecycle
    def start(self, label: str) -> None:
        """Start the thread, name this process in the GPU hold record (the dashboard's
        gpu_in_use and health panel then say the server holds the model), and unload
        after the idle timeout like a dashboard kernel."""
        from .. import envsettings, holds
        from ..engine.manager import get_manager

        holds.name_process(label)
        self.groups = envsettings.batch_size() != 1
        get_manager().start_idle_unload(envsettings.idle_unload_minutes())
        self._thread = threading.Thread(target=self._run, name="cbx-server-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel what runs, drop what waits, free the model (and its GPU hold)."""
        import cbx

        with self._changed:
            self._stopping = True
            for job in [*self._current, *self._waiting]:
                job.cancel.cancel()
            self._waiting.clear()
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            cbx.unload()
        except errors.ModelBusy as exc:   # still in S3Gen: the exit frees it anyway
            log.warning("the model was not unloaded before exit: %s", exc.message)

    # ------------------------------------------------------------------ jobs
    def submit(self, job: Job) -> None:
        import cbx

        job.cancel = job.cancel or cbx.CancelToken()
        with self._changed:
            if len(self._waiting) >= self.queue_size:
                wait = self.retry_after()
                raise QueueFull(f"{self.queue_size} requests are already waiting for the "
                                "model.",
                                f"Try again in about {wait} s (Retry-After), or raise "
                                "CBX_SERVER_QUEUE when starting the server.",
                                retry_after=wait)
            self._waiting.append(job)
            self._changed.notify()

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: one typical job."""
        recent = self._seconds[-20:]
        return max(1, round(sum(recent) / len(recent))) if recent else 5

    def _next(self) -> list[Job]:
        """The next job, with the waiting jobs that can share its batch (one chunk each,
        the same model); [] once stopping. A job passed over keeps its place."""
        with self._changed:
            while not self._waiting and not self._stopping:
                self._changed.wait()
            if self._stopping:
                return []
            group = [self._waiting.popleft()]
            if self.groups and self._waiting and group[0].one_chunk():
                variant = group[0].options.get("variant")
                for job in list(self._waiting):
                    if len(group) >= GROUP_LIMIT:
                        break
                    if job.options.get("variant") == variant and job.one_chunk():
                        self._waiting.remove(job)
                        group.append(job)
            self._current = group
            return group

    def _run(self) -> None:
        while group := self._next():
            started = time.monotonic()
            try:
                live = [job for job in group if not job.cancel.cancelled]  # clients left
                if len(live) == 1:
                    self._serve(live[0])
                elif live:
                    self._serve_group(live)
            finally:
                with self._changed:
                    self._current = []
                self._seconds.append(time.monotonic() - started)
                del self._seconds[:-20]

    def _serve(self, job: Job) -> None:
        import cbx

        self._settle(job, lambda: cbx.speak(job.text, job.voice, device=self.device,
                                            cancel=job.cancel, on_block=job.on_block,
                                            **job.options), job.finish)

    def _serve_group(self, jobs: list[Job]) -> None:
        """Jobs made together; each gets its own result or error."""
        from ..engine.synth import speak_together

        self.largest_group = max(self.largest_group, len(jobs))
        try:
            outcomes = speak_together([
                {**job.options, "text": job.text, "voice": job.voice,
                 "device": self.device, "cancel": job.cancel} for job in jobs])
        except Exception as exc:           # the model could not be loaded or held
            outcomes = [exc] * len(jobs)
        for job, outcome in zip(jobs, outcomes):
            self._settle(job, lambda outcome=outcome: _raised(outcome), job.deliver)

    def _settle(self, job: Job, make, deliver) -> None:
        """Run `make()` for `job` and hand its Result to `deliver`, or its error to the
        client (a bug as `unexpected`, its traceback to the log)."""
        try:
            result = make()
            deliver(result)
            self.served += 1
        except errors.GenerationCancelled:
            log.info("a request was cancelled (its client went away)")
        except errors.CbxError as exc:
            job.emit("error", exc)
        except Exception as exc:           # a bug: logged with its traceback by the app
            job.emit("error", unexpected(exc))

    # ----------------------------------------------------------------- state
    def state(self) -> dict:
        """The queue and the model as the health endpoint shows them (cheap)."""
        from ..engine.manager import get_manager

        return {"busy": bool(self._current), "waiting": len(self._waiting),
                "queue_size": self.queue_size, "served": self.served,
                "largest_group": self.largest_group,
                "model": get_manager().describe().to_dict()}


def _raised(outcome):
    """A group's outcome as if it were returned or raised by a call of its own."""
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
