"""Domain failures. Services raise these; each face (HTML, JSON) maps them to a status."""

from __future__ import annotations


class PortalError(Exception):
    """Base for every failure a user may be told about. `message` is safe to show."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str | None = None, *, field: str | None = None, **extra):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.field = field
        self.extra = extra


class ValidationError(PortalError):
    """The input is not valid."""

    status = 400
    code = "invalid"


class Unprocessable(PortalError):
    """Well-formed but not acceptable."""

    status = 422
    code = "unprocessable"


class AuthenticationRequired(PortalError):
    """Authentication required."""

    status = 401
    code = "unauthenticated"


class AccessDenied(PortalError):
    """You are not allowed to do that."""

    status = 403
    code = "forbidden"


class NotFound(PortalError):
    """Not found."""

    status = 404
    code = "not_found"


class Conflict(PortalError):
    """That conflicts with existing data."""

    status = 409
    code = "conflict"


class TooLarge(PortalError):
    """The upload is too large."""

    status = 413
    code = "too_large"


class Busy(PortalError):
    """Too many at once; try again in a moment."""

    status = 429
    code = "too_many"


class MachineUnreachable(PortalError):
    """The machine could not be reached."""

    status = 502
    code = "unreachable"


class HostKeyError(PortalError):
    """The machine's host key could not be verified."""

    status = 502
    code = "host_key"


class CommandTimeout(PortalError):
    """The command timed out."""

    status = 504
    code = "timeout"
