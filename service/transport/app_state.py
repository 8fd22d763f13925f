"""A route's way to the app's serving state (``service.inference.state``)."""

from starlette.requests import HTTPConnection

from service.inference.state import ServingState


def serving_state(request: HTTPConnection) -> ServingState:
    return request.app.state.serving
