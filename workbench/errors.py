"""The one exception hierarchy of Workbench.

Every error says what happened, the value received where there is one, and what to
do next. Errors that cross HTTP carry a machine-readable ``code`` and a ``hint``; the
coordinator turns them into JSON bodies of the form
``{"code": ..., "message": ..., "hint": ...}`` and the member-side client raises the
matching class again from such a body.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of every error raised by Workbench.

    Parameters
    ----------
    message : str
        What happened, with the offending value.
    hint : str, optional
        What the reader should do next.
    """

    code: str = "workbench_error"
    http_status: int = 400

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")

    def to_dict(self) -> dict[str, str | None]:
        """Return the JSON body sent over HTTP for this error."""
        return {"code": self.code, "message": self.message, "hint": self.hint}


# Crypto and encoding --------------------------------------------------------------


class CryptoError(WorkbenchError):
    """Base class of errors in keys, encodings and ciphertexts."""

    code = "crypto_error"


class KeyMismatchError(CryptoError):
    """Two operands, or an operand and a key, belong to different Paillier keys."""

    code = "key_mismatch"


class EncodingMismatchError(CryptoError):
    """Two encrypted vectors were packed with different encodings or lengths."""

    code = "encoding_mismatch"


class NonFiniteValueError(CryptoError):
    """A vector to encode holds NaN or an infinite value."""

    code = "non_finite_value"


class VectorLengthError(CryptoError):
    """A vector is longer or shorter than the length its encoding declares."""

    code = "vector_length"


class TooManyContributionsError(CryptoError):
    """More vectors were added than the encoding's headroom allows."""

    code = "too_many_contributions"


class EncodingRangeError(CryptoError):
    """A value lies outside what an encoding can represent without wrapping."""

    code = "encoding_range"


class EncodingParameterError(CryptoError):
    """The parameters of an encoding are invalid (a clip bound, a bit count)."""

    code = "encoding_parameter"


class CiphertextRangeError(CryptoError):
    """A ciphertext is not in the range ``0 < c < n**2``."""

    code = "ciphertext_range"


class WireFormatError(CryptoError):
    """Bytes received are not a well-formed message of the expected format."""

    code = "wire_format"


class KeySerializationError(CryptoError):
    """A serialized key could not be read back."""

    code = "key_serialization"


class SealingError(CryptoError):
    """A sealed secret could not be opened: wrong recipient key or altered bytes."""

    code = "sealing_error"


class KeySizeError(CryptoError):
    """A Paillier key size is not allowed, or is allowed only for tests."""

    code = "key_size"


class RandomnessPoolError(CryptoError):
    """A pool of precomputed randomness was used with another key or after closing."""

    code = "randomness_pool"


# Coordinator and protocol ---------------------------------------------------------


class ProtocolError(WorkbenchError):
    """A request broke the federation protocol."""

    code = "protocol_error"


class AuthenticationError(WorkbenchError):
    """A token or credential is missing, wrong, or already used."""

    code = "unauthenticated"
    http_status = 401


class PermissionDeniedError(WorkbenchError):
    """The caller is known but may not do this."""

    code = "forbidden"
    http_status = 403


class NotFoundError(WorkbenchError):
    """The thing asked for does not exist, or the caller may not see it."""

    code = "not_found"
    http_status = 404


class ConflictError(WorkbenchError):
    """The request clashes with the current state (a late upload, a used invitation)."""

    code = "conflict"
    http_status = 409


class AlreadyAnsweredError(ConflictError):
    """A member answered a round twice; its first answer stands."""

    code = "already_answered"


class PayloadTooLargeError(WorkbenchError):
    """A request body is larger than the coordinator accepts."""

    code = "payload_too_large"
    http_status = 413


class TooManyRequestsError(WorkbenchError):
    """A member holds more concurrent long-polls than the coordinator allows."""

    code = "too_many_requests"
    http_status = 429


class JobSpecError(WorkbenchError):
    """A job spec is invalid: an unknown model, a bad option value."""

    code = "invalid_job_spec"
    http_status = 422


class InvalidRequestError(WorkbenchError):
    """A request body or query does not have the fields and types a route takes."""

    code = "invalid_request"
    http_status = 422


class InvalidNameError(WorkbenchError):
    """A name of a dataset, member or federation breaks the naming rule."""

    code = "invalid_name"
    http_status = 422


class JobFailedError(WorkbenchError):
    """A job ended in failure; the message carries the reason reported."""

    code = "job_failed"


class StartupError(WorkbenchError):
    """The coordinator cannot start as configured: a folder, database, port or file."""

    code = "startup_error"


class CoordinatorUnavailableError(WorkbenchError):
    """The coordinator could not be reached."""

    code = "coordinator_unavailable"
    http_status = 503


# Member side ----------------------------------------------------------------------


class DatasetError(WorkbenchError):
    """A local dataset is missing, or does not match what a job declares."""

    code = "dataset_error"


class ModelRegistryError(WorkbenchError):
    """A model name is not in the registry of known estimators."""

    code = "unknown_model"
    http_status = 422


class ConformalError(WorkbenchError):
    """A conformal predictor was asked for something it cannot give."""

    code = "conformal_error"


class CalibrationSizeError(ConformalError):
    """A calibration set is too small for the requested confidence."""

    code = "calibration_too_small"


class MissingDependencyError(WorkbenchError):
    """An optional dependency is not installed; the message names the extra."""

    code = "missing_dependency"


class ConfigurationError(WorkbenchError, ValueError):
    """An argument of a call or a command is missing, of the wrong type or clashes.

    Raised before anything is sent to the coordinator: the message names the
    argument, the value received and what to pass instead.
    """

    code = "configuration_error"


class CredentialFileError(ConfigurationError):
    """A credential file cannot be written where asked, or would be overwritten."""

    code = "credential_file"


def _all_error_classes() -> dict[str, type[WorkbenchError]]:
    found: dict[str, type[WorkbenchError]] = {}
    stack: list[type[WorkbenchError]] = [WorkbenchError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


def error_from_dict(body: dict[str, object], *, status: int = 400) -> WorkbenchError:
    """Rebuild the error that a coordinator reported in a JSON body.

    Parameters
    ----------
    body : dict
        The decoded JSON body, with ``code``, ``message`` and ``hint``.
    status : int, default=400
        The HTTP status, used when the code is unknown.

    Returns
    -------
    WorkbenchError
        An instance of the class registered for ``code``, or of the generic class
        matching ``status``.
    """
    classes = _all_error_classes()
    code = str(body.get("code", ""))
    message = str(body.get("message", "the coordinator reported an error"))
    hint = body.get("hint")
    cls = classes.get(code)
    if cls is None:
        by_status = {c.http_status: c for c in reversed(list(classes.values()))}
        cls = by_status.get(status, WorkbenchError)
    return cls(message, hint=None if hint is None else str(hint))
