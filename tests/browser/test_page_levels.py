"""The web page on a grey-level model (digits at 17 levels): the intensity brush, the row text of
levels, and grey samples and completions, each checked against the /v1 API."""

import math
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_page import READ_CANVASES, api, click_button, open_page, shown_number

pytestmark = pytest.mark.slow
TOP = 16  # digits' levels are 0..16


def grey(value: int) -> tuple[int, int, int]:
    """app.js grey(): white for 0, ink (0x11) for the top level."""
    g = math.floor(255 - value / TOP * (255 - 17) + 0.5)  # Math.round, not banker's rounding
    return (g, g, g)


def canvas_levels(page: Page, selector: str) -> list[list[int]]:
    """Each canvas's pixels read back as levels; a colour that is no level's grey fails."""
    by_colour = {grey(v): v for v in range(TOP + 1)}
    rows = page.locator(f"{selector} canvas").evaluate_all(READ_CANVASES)
    return [[by_colour[tuple(rgb)] for rgb in pixels] for pixels in rows]


def test_the_card_states_the_schema_and_the_brush_paints_levels(
    page: Page, levels_server: str, screenshots: Path
) -> None:
    open_page(page, levels_server)
    expect(page.locator("#card-schema")).to_have_text("64 ordinal (17 levels)")
    expect(page.locator("#intensity-row")).to_be_visible()
    page.locator("#intensity").fill("9")
    page.locator("#cell-10").click()
    page.locator("#intensity").fill("16")
    page.locator("#cell-11").click()
    cell = page.locator("#cell-10")
    expect(cell).to_have_attribute("data-level", "9")
    expect(cell).to_have_attribute("aria-label", "row 2, column 3: level 9 of 16")
    row = [0] * 64
    row[10], row[11] = 9, 16
    expect(page.locator("#row-text")).to_have_value(",".join(map(str, row)))
    page.locator("#cell-11").click()  # the same intensity again: back to 0
    row[11] = 0
    expect(page.locator("#row-text")).to_have_value(",".join(map(str, row)))
    click_button(page, "Score", "score")
    answer = api(levels_server, "/v1/log-likelihood", {"inputs": [row]})
    assert shown_number(page, "#score-ll") == pytest.approx(answer["log_likelihood"][0], abs=5e-4)
    page.screenshot(path=screenshots / "levels-draw.png", full_page=True)


def test_row_text_takes_levels_and_refuses_what_is_not_one(page: Page, levels_server: str) -> None:
    open_page(page, levels_server)
    levels = [d % 17 for d in range(64)]
    field = page.locator("#row-text")
    field.fill(",".join(map(str, levels)))
    field.press("Enter")
    states = page.locator("#grid .cell").evaluate_all("cs => cs.map(c => Number(c.dataset.level))")
    assert states == levels
    field.fill(",".join(["17"] + ["0"] * 63))
    field.press("Enter")
    expect(page.locator("#message")).to_contain_text('value 1 is "17"')


def test_grey_samples_and_completions_are_the_apis(
    page: Page, levels_server: str, screenshots: Path
) -> None:
    open_page(page, levels_server)
    page.get_by_label("Samples", exact=True).fill("4")
    page.get_by_label("Seed", exact=True).fill("7")
    click_button(page, "Sample", "sample")
    assert (
        canvas_levels(page, "#samples")
        == api(levels_server, "/v1/sample", {"num_samples": 4, "seed": 7})["samples"]
    )
    click_button(page, "Load an image (a model sample)", "draw")
    page.get_by_label("Unknown", exact=True).check()
    for d in range(56, 64):
        page.locator(f"#cell-{d}").click()
    page.get_by_label("Completions", exact=True).fill("3")
    click_button(page, "Complete", "complete")
    drawn = page.locator("#grid .cell").evaluate_all(
        "cs => cs.map(c => c.dataset.state === 'unknown' ? null : Number(c.dataset.level))"
    )
    info = page.locator("#complete-info")
    answer = api(
        levels_server,
        "/v1/complete",
        {"inputs": [drawn], "num_samples": 3, "seed": int(info.get_attribute("data-seed"))},
    )
    pixels = page.locator("#completions canvas").evaluate_all(READ_CANVASES)
    for image, expected in zip(pixels, answer["completions"][0], strict=True):
        for d, rgb in enumerate(image):
            if d < 56:
                assert tuple(rgb) == grey(drawn[d]) and expected[d] == drawn[d]
            else:
                assert tuple(rgb) != grey(expected[d])  # filled in: tinted, not plain grey
    page.screenshot(path=screenshots / "levels-complete.png", full_page=True)
