"""The HTTP ceilings: FastAPI endpoints that read and parse a log-likelihood body and answer
zeros without any model.

``app`` parses like the real route (media type, size limit, orjson, schema, rows decoded straight
from the bytes); ``typical`` the way a FastAPI service usually does, a pydantic body model, as the
peers' benchmarks do.
"""

import numpy as np
from fastapi import FastAPI, Request
from pydantic import BaseModel

from service.transport.body import parse_rows_body, read_body
from service.transport.responses import NumpyJSONResponse
from service.transport.schemas import LogLikelihoodRequest

DIM = 784
IMAGE = (28, 28)

app = FastAPI()
typical = FastAPI()


class Rows(BaseModel):
    inputs: list[list[float]]


@app.post("/v1/log-likelihood")
async def log_likelihood(request: Request) -> NumpyJSONResponse:
    raw = await read_body(request, 16 * 1024 * 1024)
    _, rows = parse_rows_body(raw, LogLikelihoodRequest, DIM, IMAGE)
    zeros = np.zeros(len(rows))
    return NumpyJSONResponse({"log_likelihood": zeros, "bits_per_dim": zeros})


@typical.post("/v1/log-likelihood")
async def typical_log_likelihood(body: Rows) -> dict[str, list[float]]:
    rows = np.asarray(body.inputs, dtype=np.float32)
    zeros = np.zeros(len(rows)).tolist()
    return {"log_likelihood": zeros, "bits_per_dim": zeros}
