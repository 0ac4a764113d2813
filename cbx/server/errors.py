"""cbx's error taxonomy as HTTP answers in OpenAI's error shape,
`{"error": {"message", "type", "code"}}`, so every OpenAI client raises its usual
exception (openai.BadRequestError, NotFoundError, ...) and shows our message, with
the fix in it. An unexpected error's traceback goes to the server's log only.

Standard library only.
"""
from __future__ import annotations

import logging

from .. import errors

log = logging.getLogger("cbx.server")


class QueueFull(errors.ModelBusy):
    """More requests wait for the model than the server's queue holds; the client
    should try again after `retry_after` seconds (sent as Retry-After)."""

    code = "queue_full"

    def __init__(self, message: str, solution: str, *, retry_after: int):
        super().__init__(message, solution)
        self.retry_after = retry_after


# status and OpenAI error type per cbx error class; a class not listed takes its
# nearest listed ancestor's (errors.CbxError last)
STATUS: dict[type, tuple[int, str]] = {
    errors.CbxError: (400, "invalid_request_error"),
    errors.EnvironmentNotSetup: (503, "server_error"),
    errors.ModelFilesMissing: (503, "server_error"),
    errors.ModelLoadFailed: (503, "server_error"),
    errors.VoiceFileNotFound: (404, "invalid_request_error"),
    errors.ModelBusy: (409, "invalid_request_error"),
    errors.GpuInUse: (409, "invalid_request_error"),
    QueueFull: (429, "rate_limit_error"),
    errors.UnexpectedError: (500, "server_error"),
}


def status_of(error: errors.CbxError) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    raise AssertionError("unreachable: CbxError is listed")


def body(message: str, kind: str, code: str) -> dict:
    """OpenAI's error JSON; the code leads the message too, since clients show only
    the message."""
    return {"error": {"message": f"[{code}] {message}", "type": kind, "param": None,
                      "code": code}}


def describe(error: errors.CbxError) -> tuple[int, dict, dict]:
    """(status, JSON body, extra headers) for a cbx error; an unexpected one is logged
    with its traceback and answered without it."""
    status, kind = status_of(error)
    if isinstance(error, errors.UnexpectedError):
        log.error("%s: %s\n%s", error.code, error.message, error.traceback or "")
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, QueueFull) else {}
    return status, body(f"{error.message} Fix: {error.solution}", kind, error.code), headers


def unexpected(exc: BaseException) -> errors.UnexpectedError:
    """A bug's exception as unexpected_error (its traceback kept for the log)."""
    return errors.UnexpectedError.from_exception(
        exc, "Try again; if it keeps failing, restart the server and report the "
             "traceback in its log.")
