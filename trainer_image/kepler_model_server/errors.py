"""Every error the model server answers on purpose, with its HTTP status and reason.

Handlers raise these; the app translates them once, at its boundary, into a JSON body
`{"error": <reason>, "message": <text>}` with the status below. Anything else is a bug (500).
"""

from __future__ import annotations


class ServeError(Exception):
    """Base class: an expected failure with a message meant for the client."""

    status = 500
    reason = "InternalError"


class InvalidRequest(ServeError):
    """The request body or a query parameter is malformed or out of range."""

    status = 400
    reason = "InvalidRequest"


class InvalidName(InvalidRequest):
    """A name from the request (pipeline, source, model, ...) is not on the allow-list."""

    reason = "InvalidName"


class NoMatchingModel(ServeError):
    """No served model satisfies a selection request (400, as upstream and Kepler expect)."""

    status = 400
    reason = "ModelNotFound"


class NotFound(ServeError):
    """A model or pipeline named by its path is not served."""

    status = 404
    reason = "NotFound"


class BodyTooLarge(ServeError):
    """The request body exceeds --max-body-bytes."""

    status = 413
    reason = "BodyTooLarge"


class NotReady(ServeError):
    """The models folder has not been read (it is missing or unreadable)."""

    status = 503
    reason = "NotReady"


class StaleSnapshot(Exception):
    """A file of a served pipeline vanished: the pipeline was replaced or removed since the scan."""
