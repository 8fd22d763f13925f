"""The web page on a tabular model (real-valued columns beside a labelled categorical, a bernoulli
and an ordinal, every column named): the row editor, scores and marginals, completions with the
categorical probabilities, samples and the per-column surprise bars, each checked against /v1."""

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import digits_and, made_serve
from tests.browser.test_page import api, click_button, open_page, shown_number
from tests.test_table_serving import JOBS, NAMES, ROW, SCHEMA, export_table_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tabular model of tests/test_table_serving.py, with calibration rows (so p-values are
    served)."""
    return export_table_model(tmp_path_factory, "page-table")


@pytest.fixture(scope="module")
def table_server(table_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("page-table-server") / "serve.log"
    with made_serve(table_artifact, log) as url:
        yield url


@pytest.fixture(scope="module")
def mixed_repository(
    digits_artifact: Path, table_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A model repository of the digits images (the default) and the table."""
    with digits_and(digits_artifact, table_artifact, "table", tmp_path_factory) as url:
        yield url


def fill_row(page: Page, row: dict) -> None:
    """Type ``row`` into the editor as a user would; None ticks the column's Missing box."""
    for d, name in enumerate(NAMES):
        value = row[name]
        field = page.locator(f"#col-{d}")
        if value is None:
            page.get_by_label(f"{name} missing").check()
        elif field.evaluate("f => f.tagName") == "SELECT":
            field.select_option(label=str(value))
        else:
            field.fill(str(value))


def likeliest_member(weights: list[float], per_member: list[float]) -> int:
    return int(np.argmax(np.log(weights) + np.asarray(per_member)))


def table_cells(page: Page, selector: str) -> list[dict]:
    """The rows of a table of answered rows, read back from each cell's data-value."""
    rows = page.locator(f"{selector} tbody tr").evaluate_all(
        """rows => rows.map(row => Object.fromEntries([...row.querySelectorAll("td[data-column]")]
             .map(cell => [cell.dataset.column, JSON.parse(cell.dataset.value)])))"""
    )
    return rows


def test_the_editor_has_a_field_of_the_right_kind_per_column(
    page: Page, table_server: str, console_errors: list[str], screenshots: Path
) -> None:
    open_page(page, table_server)
    model = api(table_server, "/v1/model")
    assert model["test_bits_per_dim"] is None  # a density: no bits per dimension
    expect(page.locator("#card-bits")).to_contain_text("none")
    expect(page.locator("#card-nll")).to_have_text(f"{model['test_nll']:.3f} nats")
    expect(page.locator("#image-input")).to_be_hidden()
    expect(page.locator("#draw-title")).to_have_text("Row")
    expect(page.locator("#row-editor .editor-row")).to_have_count(len(NAMES))
    for d, column in enumerate(SCHEMA["columns"]):
        label = page.locator(f"label[for='col-{d}']")
        expect(label.locator(".column-name")).to_have_text(column["name"])
        expect(label.locator(".column-family")).to_contain_text(column["family"].split("_")[0])
        field = page.get_by_label(column["name"], exact=False).and_(page.locator(f"#col-{d}"))
        expect(field).to_be_visible()
        expect(page.get_by_label(f"{column['name']} missing")).not_to_be_checked()
        options = field.locator("option").all_inner_texts()
        if column["family"] == "gaussian_mixture":
            expect(field).to_have_attribute("type", "number")
            expect(field).to_have_attribute("placeholder", f"{column['mean']:g}")
            expect(field).to_have_value(f"{column['mean']:g}")  # the training mean to start with
        elif column["family"] == "categorical":
            assert options == JOBS
        elif column["family"] == "bernoulli":
            assert options == ["0", "1"]
        else:
            assert options == [str(level) for level in range(column["levels"])]
    # The card lists every column with its family and values.
    cards = page.locator("#card-columns tbody tr")
    expect(cards).to_have_count(len(NAMES))
    expect(cards.nth(1)).to_contain_text(", ".join(JOBS))
    expect(cards.nth(0)).to_have_text("0agerealmean 40, sd 12")
    expect(cards.nth(3)).to_have_text("3sizeordinal0\N{EN DASH}4")
    expect(page.locator("#card-schema")).to_contain_text("2 gaussian_mixture (real-valued)")
    page.screenshot(path=screenshots / "table-editor.png", full_page=True)
    assert console_errors == []


def test_scoring_a_row_is_the_apis_and_draws_a_bar_per_column(
    page: Page, table_server: str, console_errors: list[str], screenshots: Path
) -> None:
    open_page(page, table_server)
    fill_row(page, ROW)
    click_button(page, "Score", "score")
    answer = api(
        table_server,
        "/v1/log-likelihood",
        {"inputs": [ROW], "per_member": True, "per_dimension": True, "p_value": True},
    )
    assert shown_number(page, "#score-ll") == pytest.approx(answer["log_likelihood"][0], abs=5e-4)
    expect(page.locator("#score-ll")).to_contain_text("nats")
    expect(page.locator("#score-bits")).to_be_hidden()  # no bits per dimension for densities
    expect(page.locator("#score-method")).to_have_text("exact")
    p = float(page.locator("#score-p").get_attribute("data-p"))
    assert p == pytest.approx(answer["p_value"][0])
    # One bar per column: the surprise of each under the member that explains the row best.
    model = api(table_server, "/v1/model")
    k = likeliest_member(model["mixture_weights"], answer["per_member"][0])
    expect(page.locator("#score-member")).to_have_attribute("data-member", str(k))
    bars = page.locator("#column-bars .hbar-row")
    expect(bars).to_have_count(len(NAMES))
    shown = bars.evaluate_all(
        """rows => rows.map(row => ({
             name: row.querySelector(".hbar-name").textContent,
             value: Number(row.dataset.value),
             width: row.querySelector(".hbar").getBoundingClientRect().width}))"""
    )
    surprise = [-logp for logp in answer["per_dimension"][0][k]]
    assert [bar["value"] for bar in shown] == pytest.approx(surprise)
    assert [bar["name"] for bar in shown] == [
        "age = 37.5",
        "job = admin",
        "flag = 1",
        "size = 2",
        "income = 2.1",
    ]
    # Bars are drawn to scale: their widths are in proportion to the surprise's magnitude.
    widest = max(range(len(shown)), key=lambda d: abs(surprise[d]))
    for d, bar in enumerate(shown):
        ratio = abs(surprise[d]) / abs(surprise[widest])
        assert bar["width"] == pytest.approx(ratio * shown[widest]["width"], abs=1.5)
    total = sum(surprise)
    expect(page.locator("#column-caption")).to_contain_text(f"{total:.3f} nats")
    expect(page.locator("#heat-figure")).to_be_hidden()
    page.screenshot(path=screenshots / "table-score.png", full_page=True)
    assert console_errors == []


def test_an_empty_column_gives_the_marginal_of_the_others(page: Page, table_server: str) -> None:
    open_page(page, table_server)
    fill_row(page, {**ROW, "job": None})
    page.locator("#col-4").fill("")  # an empty number is a missing column too
    expect(page.get_by_label("income missing")).to_be_checked()
    click_button(page, "Score", "score")
    method = page.locator("#score-method")
    expect(method).to_contain_text("marginal of the 3 observed columns")
    seed = int(method.get_attribute("data-seed"))
    missing = {**ROW, "job": None, "income": None}
    answer = api(table_server, "/v1/log-likelihood", {"inputs": [missing], "seed": seed})
    assert shown_number(page, "#score-ll") == pytest.approx(answer["log_likelihood"][0], abs=5e-4)
    if answer["method"][0] == "importance":
        expect(method).to_contain_text(f"standard error {answer['standard_error'][0]:.3f} nats")
    complete = api(table_server, "/v1/log-likelihood", {"inputs": [ROW]})
    assert answer["log_likelihood"][0] != pytest.approx(complete["log_likelihood"][0])
    expect(page.locator("#column-figure")).to_be_hidden()  # bars need every column
    expect(page.locator("#anomaly-result")).to_be_hidden()
    expect(page.locator("#score-member")).to_contain_text("need every column known")


def test_completing_fills_the_missing_columns_with_probabilities(
    page: Page, table_server: str, console_errors: list[str], screenshots: Path
) -> None:
    open_page(page, table_server)
    row = {**ROW, "job": None, "income": None}
    fill_row(page, row)
    page.get_by_label("Completions", exact=True).fill("4")
    click_button(page, "Complete", "complete")
    seed = int(page.locator("#complete-info").get_attribute("data-seed"))
    answer = api(table_server, "/v1/complete", {"inputs": [row], "num_samples": 4, "seed": seed})
    # The table shows the filled-in columns: the observed ones are as given in every completion.
    shown = table_cells(page, "#completions")
    completions = answer["completions"][0]
    assert shown == [{"job": c["job"], "income": c["income"]} for c in completions]
    for completion in completions:
        assert {name: completion[name] for name in ROW if row[name] is not None} == {
            name: value for name, value in row.items() if value is not None
        }
        assert completion["job"] in JOBS and math.isfinite(completion["income"])
    expect(page.locator("#completions td.filled")).to_have_count(2 * 4)
    heads = page.locator("#completions thead th").all_inner_texts()
    assert heads == ["#", "job", "income"]
    # The job's estimated class probabilities, one bar per class, summing to 1.
    bars = page.locator("#probabilities figure[data-column='job'] .hbar-row")
    expect(bars).to_have_count(len(JOBS))
    probabilities = bars.evaluate_all(
        "rows => rows.map(r => [r.querySelector('.hbar-name').textContent, +r.dataset.value])"
    )
    assert dict(probabilities) == pytest.approx(answer["probabilities"][0]["job"])
    assert sum(p for _, p in probabilities) == pytest.approx(1.0, abs=1e-6)
    expect(page.locator("#probabilities figure")).to_have_count(1)  # income is real: no classes
    page.screenshot(path=screenshots / "table-complete.png", full_page=True)
    assert console_errors == []


def test_samples_appear_and_one_fills_the_editor(
    page: Page, table_server: str, screenshots: Path
) -> None:
    open_page(page, table_server)
    page.get_by_label("Samples", exact=True).fill("3")
    page.get_by_label("Seed", exact=True).fill("7")
    click_button(page, "Sample", "sample")
    samples = api(table_server, "/v1/sample", {"num_samples": 3, "seed": 7})["samples"]
    assert table_cells(page, "#samples") == samples
    page.get_by_role("button", name="Put row 2 in the editor").click()
    expect(page.locator("#col-0")).to_have_value(str(samples[1]["age"]))
    expect(page.locator("#col-1 option:checked")).to_have_text(samples[1]["job"])
    expect(page.locator("#col-4")).to_have_value(str(samples[1]["income"]))
    click_button(page, "Score", "score")
    answer = api(table_server, "/v1/log-likelihood", {"inputs": [samples[1]]})
    assert shown_number(page, "#score-ll") == pytest.approx(answer["log_likelihood"][0], abs=5e-4)
    # Fill from a sample: every column known, each value one the column takes.
    click_button(page, "Fill from a sample", "draw")
    missing = page.locator("#row-editor input[type=checkbox]:checked")
    expect(missing).to_have_count(0)
    page.screenshot(path=screenshots / "table-samples.png", full_page=True)


def test_the_missing_toggle_and_complete_asking_for_a_missing_column(
    page: Page, table_server: str
) -> None:
    open_page(page, table_server)
    age = page.locator("#col-0")
    age.fill("")
    expect(page.get_by_label("age missing")).to_be_checked()
    page.get_by_label("age missing").uncheck()  # known again: the training mean to start from
    expect(age).to_have_value("40")
    page.get_by_label("flag missing").check()
    page.get_by_label("flag missing").uncheck()
    click_button(page, "Complete", "complete")  # nothing is missing
    expect(page.locator("#message")).to_contain_text("Mark some columns missing first")
    click_button(page, "All missing", "draw")
    expect(page.locator("#row-editor input[type=checkbox]:checked")).to_have_count(len(NAMES))
    expect(age).to_have_value("")
    click_button(page, "Reset to means", "draw")
    expect(page.locator("#row-editor input[type=checkbox]:checked")).to_have_count(0)
    expect(page.locator("#col-4")).to_have_value("3")


def test_the_picker_swaps_the_grid_and_the_row_editor(
    page: Page, mixed_repository: str, console_errors: list[str], screenshots: Path
) -> None:
    open_page(page, mixed_repository)
    picker = page.get_by_label("Serve from")
    expect(picker).to_have_value("digits")
    expect(page.locator("#row-editor")).to_be_hidden()
    page.locator("#cell-18").click()
    click_button(page, "Score", "score")
    expect(page.locator("#heat-figure")).to_be_visible()
    expect(page.locator("#score-bits")).to_be_visible()
    picker.select_option("table")
    expect(page.locator("#row-editor .editor-row")).to_have_count(len(NAMES))
    expect(page.locator("#grid")).to_be_hidden()
    expect(page.locator("#heat-figure")).to_be_hidden()  # the image's results went with it
    expect(page.get_by_label("Complexity-corrected score")).to_be_hidden()
    fill_row(page, ROW)
    click_button(page, "Score", "score")
    answer = api(mixed_repository, "/v1/models/table/log-likelihood", {"inputs": [ROW]})
    assert shown_number(page, "#score-ll") == pytest.approx(answer["log_likelihood"][0], abs=5e-4)
    expect(page.locator("#column-bars .hbar-row")).to_have_count(len(NAMES))
    picker.select_option("digits")
    expect(page.locator("#grid .cell")).to_have_count(64)
    expect(page.locator("#row-editor")).to_be_hidden()
    expect(page.locator("#column-figure")).to_be_hidden()
    expect(page.get_by_label("Complexity-corrected score")).to_be_visible()
    page.locator("#cell-18").click()
    click_button(page, "Score", "score")
    expect(page.locator("#score-bits")).to_be_visible()
    expect(page.locator("#heat-figure")).to_be_visible()
    page.screenshot(path=screenshots / "table-picker-back.png", full_page=True)
    assert console_errors == []
