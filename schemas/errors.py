"""Errors with a stable `error_type` that lands in the `failures` table."""

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
