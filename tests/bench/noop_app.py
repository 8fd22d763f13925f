"""The HTTP ceiling: a FastAPI endpoint that reads and parses a log-likelihood body like the real
route (media type, size limit, orjson, schema, row decoding) and answers without any model."""

import numpy as np
from fastapi import FastAPI, Request

from service.body import parse_rows_body, read_body
from service.responses import NumpyJSONResponse
from service.schemas import LogLikelihoodRequest

DIM = 784
IMAGE = (28, 28)

app = FastAPI()


@app.post("/v1/log-likelihood")
async def log_likelihood(request: Request) -> NumpyJSONResponse:
    raw = await read_body(request, 16 * 1024 * 1024)
    _, rows = parse_rows_body(raw, LogLikelihoodRequest, DIM, IMAGE)
    zeros = np.zeros(len(rows))
    return NumpyJSONResponse({"log_likelihood": zeros, "bits_per_dim": zeros})
