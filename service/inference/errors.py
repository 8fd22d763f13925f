"""Why the data plane refused or failed a request, in words meant for the client.

No HTTP here: ``service.transport.errors`` maps each kind to a status code and to the v1 or the
V2 body, in one table.
"""


class ServiceError(Exception):
    """An error whose message is meant for the client."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidField(ServiceError):
    """A request value the model cannot take; ``loc`` names the field, as a path into the body."""

    def __init__(self, loc: tuple[str | int, ...], problem: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {problem}")
        self.loc = loc
        self.problem = problem


class NoProductNormaliser(InvalidField):
    """combination=product asked of an artifact exported without the normaliser's estimate."""

    def __init__(self) -> None:
        super().__init__(
            ("combination",),
            "this model has no product normaliser (export it with made-export --product)",
        )


class Unavailable(ServiceError):
    """The request is fine but cannot be served now: the client should retry shortly."""


class NotReady(Unavailable):
    """No model serves yet (starting, or a failed start), or the service is stopping."""


class Overloaded(Unavailable):
    """Admission refused the rows: the queue holds more work than the request timeout allows."""


class ShuttingDown(Unavailable):
    """The batcher is closed, or the server cancelled the request at the end of its grace."""


class TimedOut(Unavailable):
    """The work did not finish within the request timeout (``MADE_REQUEST_TIMEOUT_S``)."""


class UnknownModel(ServiceError):
    """A model name or version the server's repository does not hold."""


class ModelNotLoaded(Unavailable):
    """A model the repository holds but that is not loaded, with loading on demand turned off."""
