"""AWS error types, with their HTTP status and wire body, in one place.

Every error that reaches a client is a `LambdaError`; one middleware (`faas.api.middleware`) turns it into
the response AWS would send: a JSON body, the `x-amzn-ErrorType` header and the status code.
"""

from __future__ import annotations

from typing import Any


class LambdaError(Exception):
    """An error with an AWS error type. `body_type` is the `Type` member ("User", or None for no member)."""

    status = 400
    code = "ServiceException"
    body_type: str | None = "User"
    # Real AWS spells the message member `Message` for some error types and `message` for others.
    message_key = "message"

    def __init__(self, message: str | None = None, *, body_type: str | None | type[Ellipsis] = ..., **extra: Any):
        super().__init__(message)
        self.message = message
        if body_type is not ...:
            self.body_type = body_type  # type: ignore[assignment]
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.body_type is not None:
            out["Type"] = self.body_type
        out[self.message_key] = self.message
        out.update(self.extra)
        return out


class ServiceException(LambdaError):
    status = 500
    code = "ServiceException"
    body_type = "Service"


class ValidationException(LambdaError):
    code = "ValidationException"
    body_type = None


class InvalidParameterValueException(LambdaError):
    code = "InvalidParameterValueException"


class InvalidRequestContentException(LambdaError):
    code = "InvalidRequestContentException"


class SerializationException(LambdaError):
    code = "SerializationException"
    body_type = None


class ResourceNotFoundException(LambdaError):
    status = 404
    code = "ResourceNotFoundException"
    message_key = "Message"


class ResourceConflictException(LambdaError):
    status = 409
    code = "ResourceConflictException"


class ResourceNotReadyException(LambdaError):
    status = 502
    code = "ResourceNotReadyException"


class PreconditionFailedException(LambdaError):
    status = 412
    code = "PreconditionFailedException"


class RequestTooLargeException(LambdaError):
    status = 413
    code = "RequestTooLargeException"


class RequestEntityTooLargeException(LambdaError):
    status = 413
    code = "RequestEntityTooLargeException"
    body_type = None
    message_key = "Message"


class ProvisionedConcurrencyConfigNotFoundException(LambdaError):
    status = 404
    code = "ProvisionedConcurrencyConfigNotFoundException"


class TooManyRequestsException(LambdaError):
    status = 429
    code = "TooManyRequestsException"


class AccessDeniedException(LambdaError):
    status = 403
    code = "AccessDeniedException"
    body_type = None
    message_key = "Message"


class UnknownOperationException(LambdaError):
    status = 404
    code = "UnknownOperationException"
    body_type = None
    message_key = "Message"


class CodeStorageExceededException(LambdaError):
    code = "CodeStorageExceededException"


class UnsupportedMediaTypeException(LambdaError):
    status = 415
    code = "UnsupportedMediaTypeException"


# Messages real AWS sends, shared by several operations.
REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
)


def function_not_found(arn: str) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Function not found: {arn}")


def validation_message(errors: list[str]) -> str:
    n = len(errors)
    return f"{n} validation error{'s' if n != 1 else ''} detected: " + "; ".join(errors)
