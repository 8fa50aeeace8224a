"""The one error type for bad inputs and its small, fixed vocabulary.

Every input yields exactly one result row; when it fails, ``error_type`` is one
of :data:`ERROR_TYPES`, so Parquet consumers can group failures without parsing
free-form messages.
"""

from __future__ import annotations

ERROR_TYPES = (
    "not_found",
    "download_failed",
    "decode_failed",
    "unsupported_format",
    "too_large",
    "inference_failed",
    "invalid_prompt",  # a prompt that does not fit this image (open_vocabulary_segmentation)
)


class InputError(Exception):
    """An input that cannot be turned into an image; names the input and the reason."""

    def __init__(self, uri: str | None, error_type: str, message: str, transient: bool = False) -> None:
        if error_type not in ERROR_TYPES:
            raise ValueError(f"unknown error_type {error_type!r}")
        self.uri = uri
        self.error_type = error_type
        self.message = message
        #: True when the same read may succeed later (throttling, 5xx, a dropped connection):
        #: batch jobs retry the shard rather than record a permanent failure.
        self.transient = transient
        super().__init__(f"{uri or '<array>'}: {error_type}: {message}")


def classify_load_error(error: BaseException) -> tuple[str, str]:
    """``(error_type, message)`` of an input that failed to load: an :class:`InputError` says its own,
    a ``TypeError`` is an input of a kind we cannot read, anything else is a failed decode."""
    if isinstance(error, InputError):
        return error.error_type, error.message
    if isinstance(error, TypeError):
        return "unsupported_format", str(error)
    return "decode_failed", f"{type(error).__name__}: {error}"
