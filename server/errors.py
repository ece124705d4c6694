"""One exception hierarchy for every layer: each error carries its HTTP status and issue code.

Raised by server.fhir, server.store, auth and fhir_mapping alike; rendered as an
OperationOutcome by server.fhir.outcomes (the only serialiser) and sent by the Flask error
handlers in server.api.error_handlers.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import ClassVar


class FhirError(Exception):
    """Base of all errors that become an OperationOutcome."""

    status: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"
    severity: ClassVar[str] = "error"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: Sequence[str] = (),
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        issues: Sequence[Mapping[str, object]] = (),
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = tuple(expression)
        self.message_id = message_id
        self.headers = dict(headers or {})
        # Extra issues (one per validation error, for instance) beyond the main one.
        self.issues = tuple(issues)


class InvalidRequestError(FhirError):
    """The request is malformed (bad JSON, bad parameter, mismatched id)."""

    status, issue_code = 400, "invalid"


class StructureError(FhirError):
    """The body's structure is refused before any model is built (e.g. it nests too deep)."""

    status, issue_code = 400, "structure"


class ValidationFailedError(FhirError):
    """The resource breaks the base rules of FHIR: its model, a required binding, an invariant, the
    type a reference may name. R4B http.html: "400 Bad Request - resource could not be parsed or
    failed basic FHIR validation rules" (a batch entry gets the same status)."""

    status, issue_code = 400, "processing"


class BusinessRuleError(ValidationFailedError):
    """Valid FHIR that breaks a profile it claims or a rule of this server (a reference that must
    resolve, what a Subscription may ask for). R4B http.html: "422 Unprocessable Entity - The
    proposed resource violated applicable FHIR profiles or server business rules"."""

    status = 422


class UnprocessableError(FhirError):
    """The request is well-formed but cannot be carried out (e.g. a patch that fails)."""

    status, issue_code = 422, "processing"


class UnauthenticatedError(FhirError):
    """No valid credentials were presented."""

    status, issue_code = 401, "login"


class ForbiddenError(FhirError):
    """The credentials do not allow this interaction."""

    status, issue_code = 403, "forbidden"


class NotFoundError(FhirError):
    """The resource, type or route does not exist."""

    status, issue_code = 404, "not-found"


class MethodNotAllowedError(FhirError):
    """The interaction is not allowed on this resource type."""

    status, issue_code = 405, "not-supported"


class NotAcceptableError(FhirError):
    """The client asked for a representation the server cannot produce."""

    status, issue_code = 406, "not-supported"


class GoneError(FhirError):
    """The resource was deleted."""

    status, issue_code = 410, "deleted"


class VersionConflictError(FhirError):
    """A concurrent write conflicted with this one."""

    status, issue_code = 409, "conflict"


class PreconditionFailedError(FhirError):
    """An If-Match (or similar) precondition did not hold."""

    status, issue_code = 412, "conflict"


class MultipleMatchesError(FhirError):
    """Conditional criteria matched more than one resource."""

    status, issue_code = 412, "multiple-matches"


class PayloadTooLargeError(FhirError):
    """The request body (or bundle) exceeds the configured limit."""

    status, issue_code = 413, "too-costly"


class UnsupportedMediaTypeError(FhirError):
    """The request body has a content type the server does not accept."""

    status, issue_code = 415, "not-supported"


class TooManyRequestsError(FhirError):
    """The client is sending requests too fast."""

    status, issue_code = 429, "throttled"


class NotSupportedError(FhirError):
    """The server does not implement what was asked."""

    status, issue_code = 501, "not-supported"


class ServiceUnavailableError(FhirError):
    """A dependency (the database) is unreachable for now; the client may retry (Retry-After)."""

    status, issue_code = 503, "transient"
