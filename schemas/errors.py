"""Every error type that can reach the `failures` table, in one place.

`failures.error_type` is a data contract: it is the class name (or, for HTTP and helper-process
errors, the name given below), so renaming a class here changes warehouse data. The set is
pinned by tests/schemas/test_errors_contract.py and listed in the README. Python's own exception
names (e.g. `MemoryError` from a model call) can also appear, for failures nobody foresaw.
"""

from __future__ import annotations


class VlbeamError(Exception):
    """Base class: an expected, explained failure of one input or one unit of work."""


class EmptyFile(VlbeamError):
    pass


class UnsupportedInput(VlbeamError):
    pass


class TaskNotEnabled(VlbeamError):
    pass


class InvalidPdf(VlbeamError):
    pass


class EncryptedPdf(VlbeamError):
    pass


class NoPages(VlbeamError):
    pass


class InvalidImage(VlbeamError):
    pass


class PageTooLarge(VlbeamError):
    pass


class DegeneratePage(VlbeamError):
    pass


class RenderTimeout(VlbeamError):
    pass


class RendererCrashed(VlbeamError):
    pass


class ModelNotFound(VlbeamError):
    pass


class NoFilesMatched(VlbeamError):
    """An --input pattern that matched no file."""


class FileNotFound(VlbeamError):
    """An input given by its exact URI (`vlbeam.Process`, `--input-manifest`) that isn't there."""


class InvalidInput(VlbeamError):
    """An input element that names no file: no `uri`, or not a string or a mapping."""


class InvalidVideo(VlbeamError):
    pass


class NoVideoStream(VlbeamError):
    pass


class EmptyWindow(VlbeamError):
    """A video window in which no frame could be decoded."""


class UnparseableAnswer(VlbeamError):
    """A grounding answer with no readable time span (the raw answer is kept)."""


class TooManyPages(VlbeamError):
    """--extract-from images: a document with more pages than --extract-max-pages (stage
    `extract`; its OCR is kept)."""


class MissingApiKey(VlbeamError):
    pass


class PreflightFailed(VlbeamError):
    """The one request before a run was refused (bad key, URL or model): the run stops."""


class BudgetExceeded(VlbeamError):
    """A unit not sent to the model because the run's spend reached `--max-cost` (also the
    launcher's one message when a run stops, or refuses to start, on its budget)."""


class ApiError(VlbeamError):
    """A request that failed for good: `HTTP<status>`, or `ApiConnectionError` without one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type_name = f"HTTP{status}" if status else "ApiConnectionError"


class ServerCrash(VlbeamError):
    """A request that was in flight each time its managed server died (twice): it is taken to
    be what crashes the server, and fails alone instead of being sent again."""


class EngineUnavailable(VlbeamError):
    """The worker's engine can't serve (a server that won't stay up, a CUDA error, a generate
    call past --generate-timeout-s): its breaker is open, and the remaining units fail fast
    with this type; the run exits non-zero after publishing what it has."""


class RunAborted(BaseException):
    """Stops the whole job (deliberately not an Exception, so dead-letter handlers and Beam's
    bundle processing don't turn it into one failure row per element), e.g. every API request
    rejected. Not a failure type: it never reaches the `failures` table."""


class RemoteError(VlbeamError):
    """An error raised in a helper process, re-raised here under its original type name."""

    def __init__(self, error_type_name: str, message: str) -> None:
        super().__init__(message)
        self.error_type_name = error_type_name


def error_type(exc: BaseException) -> str:
    """The name recorded in `failures.error_type`."""
    return getattr(exc, "error_type_name", None) or type(exc).__name__


def error_message(exc: BaseException, limit: int = 2000) -> str:
    """A one-paragraph message for `failures.message` (never empty, bounded)."""
    text = str(exc).strip() or repr(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."
