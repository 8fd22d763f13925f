"""JSON responses rendered by orjson, which serializes numpy arrays without Python loops."""

from typing import Any

import orjson
from starlette.responses import Response


class NumpyJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
