"""The one thread that speaks for the server, fed by a bounded queue: the server's one
seam to the engine (like the dashboard's backend.py).

Why one thread: the process holds one model, and the model manager lets one
generation run at a time (a second gets model_busy rather than waiting), so requests
wait their turn in the queue instead; a full queue is refused at once (429 with
Retry-After) rather than left to time out. Each job speaks through `cbx.speak` with
`on_block`, the one synthesis path, encodes each block as it comes and hands the bytes
to the request's event loop; the request's cancel token stops it within a token when
its client goes away.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from .. import errors
from .encoding import Encoder
from .errors import QueueFull, unexpected

log = logging.getLogger("cbx.server")

SERVER_LABEL_ENV = "JPY_SESSION_NAME"    # what cbx.holds names this process by


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


class SpeechWorker:
    """Runs jobs one at a time on its own thread; `submit` refuses when `queue_size`
    jobs already wait."""

    def __init__(self, queue_size: int, device: str = "auto"):
        self.device = device
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._current: Job | None = None
        self.served = 0
        self._seconds: list[float] = []     # recent job durations, for Retry-After

    # ------------------------------------------------------------- lifecycle
    def start(self, label: str) -> None:
        """Start the thread, name this process in the GPU hold record (the dashboard's
        gpu_in_use then says who holds the GPU), and unload after the idle timeout
        like a dashboard kernel."""
        from .. import envsettings
        from ..engine.manager import get_manager

        os.environ[SERVER_LABEL_ENV] = label
        get_manager().start_idle_unload(envsettings.idle_unload_minutes())
        self._thread = threading.Thread(target=self._run, name="cbx-server-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel what runs, drop what waits, free the model (and its GPU hold)."""
        import cbx

        current = self._current
        if current is not None:
            current.cancel.cancel()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel.cancel()
        self._jobs.put(None)
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
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            wait = self.retry_after()
            raise QueueFull(f"{self._jobs.maxsize} requests are already waiting for the "
                            "model.",
                            f"Try again in about {wait} s (Retry-After), or raise "
                            "CBX_SERVER_QUEUE when starting the server.",
                            retry_after=wait) from None

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: one typical job."""
        recent = self._seconds[-20:]
        return max(1, round(sum(recent) / len(recent))) if recent else 5

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._current = job
            try:
                self._serve(job)
            finally:
                self._current = None

    def _serve(self, job: Job) -> None:
        import cbx

        if job.cancel.cancelled:           # its client left while it waited
            return
        started = time.monotonic()
        try:
            result = cbx.speak(job.text, job.voice, device=self.device, cancel=job.cancel,
                               on_block=job.on_block, **job.options)
            job.finish(result)
            self.served += 1
        except errors.GenerationCancelled:
            log.info("a request was cancelled (its client went away)")
        except errors.CbxError as exc:
            job.emit("error", exc)
        except Exception as exc:           # a bug: logged with its traceback by the app
            job.emit("error", unexpected(exc))
        finally:
            self._seconds.append(time.monotonic() - started)
            del self._seconds[:-20]

    # ----------------------------------------------------------------- state
    def state(self) -> dict:
        """The queue and the model as the health endpoint shows them (cheap)."""
        from ..engine.manager import get_manager

        return {"busy": self._current is not None, "waiting": self._jobs.qsize(),
                "queue_size": self._jobs.maxsize, "served": self.served,
                "model": get_manager().describe().to_dict()}
