"""The raw-bytes fast path of the row decoder agrees with a JSON parser on every text it accepts."""

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.transport.body import parse_rows_body
from service.transport.codec import decode_rows, rows_from_text, split_binary_inputs
from service.transport.schemas import LogLikelihoodRequest

DIM, IMAGE = 6, (2, 3)


def binary_rows(draw_rows: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((draw_rows, DIM)) < 0.5).astype(int)


@pytest.mark.parametrize("image", [False, True])
def test_fast_path_reads_flat_and_image_rows(image):
    rows = binary_rows(5, 0)
    value = rows.reshape(5, *IMAGE).tolist() if image else rows.tolist()
    text = json.dumps(value, indent=1).encode()  # white space and newlines are allowed
    np.testing.assert_array_equal(rows_from_text(text, DIM, IMAGE), rows)


@pytest.mark.parametrize(
    "text",
    [
        b"[[0,1,0,1,0,11]]",  # two digits in one slot
        b"[[0,1,0,1,0,,1]]",  # an empty slot
        b"[[0,1,0,1,0]]",  # a short row
        b"[[0,1,0,1,0,1],[0,1]]",  # ragged
        b"[[[0,1],[1,0],[1,1]]]",  # the wrong image shape
        b"[0,1,0,1,0,1]",  # not a list of rows
        b"[]",
    ],
)
def test_fast_path_declines_what_it_cannot_prove(text):
    assert rows_from_text(text, DIM, IMAGE) is None


def test_split_keeps_the_options_and_declines_duplicates():
    raw = b'{"per_member": true, "inputs": [[0,1,0,1,0,1]], "seed": 3}'
    text, rest = split_binary_inputs(raw)
    assert text == b"[[0,1,0,1,0,1]]"
    assert orjson.loads(rest) == {"per_member": True, "inputs": 0, "seed": 3}
    assert split_binary_inputs(b'{"inputs": [[0,1]], "inputs": [[1,1]]}') is None
    assert split_binary_inputs(b'{"inputs": [[0,null]]}') is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[],01 ", max_size=60))
def test_whatever_the_fast_path_accepts_a_json_parser_reads_the_same(text):
    rows = rows_from_text(text.encode(), DIM, IMAGE)
    if rows is not None:
        parsed = orjson.loads(text)
        np.testing.assert_array_equal(decode_rows(parsed, DIM, IMAGE, False, True), rows)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.integers(0, 2**32 - 1), st.booleans())
def test_fast_and_general_paths_agree_on_request_bodies(count, seed, per_member):
    rows = binary_rows(count, seed)
    raw = orjson.dumps({"inputs": rows.tolist(), "per_member": per_member})
    body, fast = parse_rows_body(raw, LogLikelihoodRequest, DIM, IMAGE)
    assert body.per_member is per_member
    general = decode_rows(orjson.loads(raw)["inputs"], DIM, IMAGE, True, True)
    np.testing.assert_array_equal(fast, general)
