"use strict";
// The page of made-serve. It calls only the public /v1 API, exactly as a client would; the API
// key, when the service asks for one, lives in this closure and nowhere else.
(() => {
  const ROW_COLUMNS = 16; // layout of the row editor for models without an image shape
  const THUMB_PIXELS = 96; // rough size of a completion or sample image
  const EXPLAIN = 5; // most surprising dimensions asked for and outlined
  const SELECT_LEVELS = 32; // an ordinal column with more levels gets a number field, not a list
  const TABLE_COMPLETIONS = 5; // the default count of completions for a table's row
  const COLORS = {
    on: "#111111",
    off: "#ffffff",
    filledOn: "#1f5fbf",
    filledOff: "#cfe0f7",
    padding: "#dddddd",
  };
  const HEAT_STOPS = [
    [255, 255, 255],
    [255, 224, 102],
    [240, 120, 40],
    [180, 20, 30],
    [80, 0, 20],
  ];

  const state = {
    model: null,
    table: false, // a row editor of named columns rather than a drawing grid (isTableModel)
    modelName: null, // the repository model picked; null: the server's default (/v1/...)
    rows: 1, // layout rows: the image height, or ceil(D / ROW_COLUMNS)
    cols: 1,
    pixels: [], // D entries: 1, 0 or null (unknown)
    cursor: 0,
    paintValue: 0,
    painting: false,
    apiKey: null,
    retry: null, // the action a 401 interrupted, run again once a key is entered
  };

  const $ = (id) => document.getElementById(id);

  /** An HTTP error from the API, with a message meant for a person and the body's detail. */
  class ApiError extends Error {
    constructor(status, message, detail) {
      super(message);
      this.status = status;
      this.detail = detail;
    }
  }

  /** A mistake in the page's own fields, caught before any request. */
  class InputError extends Error {}

  // ---- talking to /v1 ------------------------------------------------------------------------

  function showCall(method, path, body) {
    const auth = state.apiKey ? ` -H 'Authorization: Bearer $MADE_API_KEY'` : "";
    const url = `${window.location.origin}${path}`;
    $("api-call").textContent =
      body === undefined
        ? `curl${auth} '${url}'`
        : `curl -X ${method} '${url}' -H 'Content-Type: application/json'${auth} \\\n  -d '${body}'`;
  }

  function describeError(status, data, retryAfter) {
    const detail = data && data.detail;
    if (status === 401) {
      return state.apiKey
        ? "The service refused the API key. Enter the right key to continue."
        : "This service needs an API key. Enter it below to continue.";
    }
    if (status === 422 && Array.isArray(detail)) {
      const items = detail.map((item) => {
        const loc = (item.loc || []).filter((part, i) => !(i === 0 && part === "body"));
        return loc.length ? `${loc.join(".")}: ${item.msg}` : item.msg;
      });
      return `The service refused the request: ${items.join("; ")}.`;
    }
    if (status === 503) {
      const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
      return `The service is busy or not ready${detail ? ` (${detail})` : ""}.${wait}`;
    }
    const text = typeof detail === "string" ? detail : JSON.stringify(detail ?? "");
    return `The service answered HTTP ${status}${text ? `: ${text}` : ""}.`;
  }

  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
    showCall(method, path, body);
    let response;
    try {
      response = await fetch(path, { method, headers, body });
    } catch (error) {
      throw new ApiError(0, `Cannot reach the service: ${error.message}.`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = describeError(response.status, data, response.headers.get("Retry-After"));
      throw new ApiError(response.status, message, data && data.detail);
    }
    return data;
  }

  /** JSON body with the seed spliced in as typed: JSON numbers in JS lose digits past 2^53. */
  function jsonBody(fields, seedText) {
    const text = JSON.stringify(fields);
    return seedText === undefined ? text : `${text.slice(0, -1)},"seed":${seedText}}`;
  }

  function randomSeed() {
    return String(Math.floor(Math.random() * 2 ** 31));
  }

  // ---- messages and running actions ------------------------------------------------------------

  function showMessage(text, kind = "error") {
    const box = $("message");
    box.textContent = text;
    box.className = `message ${kind}`;
    box.hidden = false;
  }

  function clearMessage() {
    $("message").hidden = true;
  }

  /** Run one user action: mark its section busy, and turn every failure into a visible message. */
  async function run(action, section) {
    clearMessage();
    if (section) section.setAttribute("aria-busy", "true");
    try {
      await action();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        state.retry = { action, section };
        $("key-form").hidden = false;
        $("api-key").focus();
      }
      const known = error instanceof ApiError || error instanceof InputError;
      showMessage(known ? error.message : `Unexpected error: ${error}`);
    } finally {
      if (section) section.setAttribute("aria-busy", "false");
    }
  }

  /** The path of an operation for the model picked: /v1/models/{name}/... or the default's. */
  function modelPath(operation) {
    if (state.modelName === null) return `/v1/${operation}`;
    return `/v1/models/${encodeURIComponent(state.modelName)}/${operation}`;
  }

  function requireModel() {
    if (!state.model) throw new InputError("The model has not loaded yet.");
  }

  function readCount(id, label) {
    const text = $(id).value.trim();
    if (!/^[1-9][0-9]*$/.test(text)) throw new InputError(`${label} must be a whole number ≥ 1.`);
    return Number(text);
  }

  // ---- model card ----------------------------------------------------------------------------

  function renderCard(m) {
    $("card-name").textContent = m.name;
    $("card-served").textContent = `${m.model}, version ${m.version}`;
    $("card-source").textContent = `${m.data_source} (${m.binarization})`;
    $("card-dim").textContent = String(m.dim);
    $("card-schema").textContent = schemaText(m.dimensions);
    renderColumns(m);
    $("card-shape").textContent = m.image_shape
      ? `${m.image_shape[0]} × ${m.image_shape[1]}`
      : "none (rows of D values)";
    $("card-members").textContent = `${m.num_members} (${m.weights_kind} weights)`;
    $("card-nll").textContent = `${m.test_nll.toFixed(3)} nats`;
    // null for densities (real-valued columns): nats in the data's units, not bits per dimension.
    $("card-bits").textContent =
      m.test_bits_per_dim === null
        ? "none (a density over real-valued columns: see the test NLL)"
        : m.test_bits_per_dim.toFixed(4);
    $("card-calibration").textContent = calibrationText(m.calibration_rows);
    $("card-sha").textContent = m.artifact_sha256.slice(0, 12);
    $("card-sha").title = m.artifact_sha256;
    $("card-versions").textContent = Object.entries(m.versions)
      .map(([name, value]) => `${name} ${value}`)
      .join(", ");
    const bars = $("weights");
    bars.replaceChildren();
    const top = Math.max(...m.mixture_weights);
    m.mixture_weights.forEach((weight, k) => {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.setAttribute("role", "listitem");
      bar.dataset.weight = String(weight);
      bar.setAttribute("aria-label", `member ${k}: ${weight.toFixed(3)}`);
      bar.title = `member ${k}: ${weight.toFixed(3)}`;
      bar.style.height = `${Math.max(2, (100 * weight) / top)}%`;
      bars.append(bar);
    });
    $("weights-caption").textContent =
      `Mixture weights of the ${m.num_members} members (${m.weights_kind}); ` +
      `largest ${top.toFixed(3)}`;
    $("card-loading").hidden = true;
    $("card-fields").hidden = false;
    $("weights-figure").hidden = false;
  }

  /** "64 ordinal (17 levels)" per kind of dimension; binary models have no dimensions. */
  function schemaText(dimensions) {
    if (!dimensions) return "every dimension 0/1 (bernoulli)";
    const counts = new Map();
    for (const d of dimensions) {
      const kind =
        d.family === "bernoulli"
          ? "bernoulli (0/1)"
          : d.family === "gaussian_mixture"
            ? "gaussian_mixture (real-valued)"
            : `${d.family} (${d.family === "ordinal" ? d.levels : d.classes} ${
                d.family === "ordinal" ? "levels" : "classes"
              })`;
      counts.set(kind, (counts.get(kind) || 0) + 1);
    }
    return [...counts].map(([kind, n]) => `${n} ${kind}`).join(", ");
  }

  /** The card's table of columns, one line each, for models whose dimensions are named or
   * real-valued (an image's pixels are summed up by the schema line alone). */
  function renderColumns(m) {
    const shown = !m.image_shape && Array.isArray(m.dimensions) &&
      m.dimensions.some((d) => d.name || d.family === "gaussian_mixture");
    $("card-columns-box").hidden = !shown;
    if (!shown) return;
    $("card-columns-summary").textContent = `${m.dim} columns`;
    $("card-columns").tBodies[0].replaceChildren(
      ...m.dimensions.map((dim, d) => {
        const row = document.createElement("tr");
        row.dataset.index = String(d);
        const family = dim.family === "gaussian_mixture" ? "real" : dim.family;
        for (const text of [String(d), dim.name ? breakableName(d) : "", family, valuesText(dim)]) {
          const cell = document.createElement("td");
          cell.append(text);
          row.append(cell);
        }
        return row;
      }),
    );
    $("card-columns-note").hidden = !m.dimensions.some((d) => d.family === "gaussian_mixture");
  }

  /** A real number for a person: four significant digits, an exponent only when far from 1. */
  function formatReal(value) {
    const size = Math.abs(value);
    if (size !== 0 && (size >= 1e5 || size < 1e-3)) return value.toExponential(3);
    return String(Number(value.toPrecision(4)));
  }

  function familyText(dim) {
    if (dim.family === "gaussian_mixture") return "real (gaussian_mixture)";
    if (dim.family === "categorical") return `categorical (${dim.classes} classes)`;
    if (dim.family === "ordinal") return `ordinal (${dim.levels} levels)`;
    return "bernoulli (0/1)";
  }

  function valuesText(dim) {
    if (dim.family === "gaussian_mixture") {
      return `mean ${formatReal(dim.mean)}, sd ${formatReal(dim.scale)}`;
    }
    if (dim.family === "categorical") {
      return dim.labels ? dim.labels.join(", ") : `0–${dim.classes - 1}`;
    }
    if (dim.family === "ordinal") return `0–${dim.levels - 1}`;
    return "0, 1";
  }

  /** The highest level a dimension takes (1 for bits). */
  function topLevel(d) {
    if (!d || d.family === "bernoulli") return 1;
    return (d.family === "ordinal" ? d.levels : d.classes) - 1;
  }

  function calibrationText(rows) {
    if (rows === undefined) return "not reported (p-values are asked for when scoring)";
    if (rows === null) return "none (p-values are refused)";
    return `${rows} held-out rows (for p-values)`;
  }

  /** The repository's models in the picker (shown when there are several); the default one,
   * or the first, is picked. */
  async function loadModels() {
    const { models } = await api("GET", "/v1/models");
    const picker = $("model-picker");
    picker.replaceChildren(
      ...models.map((entry) => {
        const option = document.createElement("option");
        option.value = entry.name;
        const ready = entry.versions.some((v) => v.state === "READY");
        option.textContent =
          entry.name + (entry.default ? " (default)" : "") + (ready ? "" : " (loads on use)");
        return option;
      }),
    );
    const picked = models.find((entry) => entry.default) || models[0];
    state.modelName = models.length > 1 && picked ? picked.name : null;
    if (picked) picker.value = picked.name;
    $("picker-row").hidden = models.length < 2;
    await loadModel();
  }

  async function loadModel() {
    const m = await api(
      "GET",
      state.modelName === null
        ? "/v1/model"
        : `/v1/models/${encodeURIComponent(state.modelName)}`,
    );
    state.model = m;
    const wasTable = state.table;
    state.table = isTableModel(m);
    if (state.table !== wasTable) clearResults();
    showInputKind();
    renderCard(m);
    if (state.table) {
      state.pixels = [];
      buildEditor();
      return;
    }
    if (m.image_shape) {
      [state.rows, state.cols] = m.image_shape;
    } else {
      state.cols = Math.min(m.dim, ROW_COLUMNS);
      state.rows = Math.ceil(m.dim / state.cols);
    }
    state.pixels = new Array(m.dim).fill(0);
    state.levels = m.dimensions ? m.dimensions.map(topLevel) : new Array(m.dim).fill(1);
    state.maxLevel = Math.max(...state.levels);
    const intensity = $("intensity");
    intensity.max = String(state.maxLevel);
    intensity.value = String(state.maxLevel);
    $("intensity-value").textContent = intensity.value;
    $("intensity-row").hidden = state.maxLevel < 2;
    $("complete-legend").hidden = $("complete-legend-levels").hidden = true;
    $("grid-hint").textContent =
      state.maxLevel < 2
        ? "Click or drag to paint; the first cell decides on or off. " +
          "The Unknown brush marks pixels as missing (hatched)."
        : "Click or drag to paint at the intensity; a stroke starting on a cell already at it " +
          "clears to 0. The Unknown brush marks pixels as missing (hatched).";
    $("row-text-label").textContent =
      state.maxLevel < 2
        ? "Row as text (0, 1, ? for unknown)"
        : `Row as text (levels 0-${state.maxLevel} separated by commas, ? for unknown)`;
    $("explain-title").textContent = m.image_shape
      ? "Most surprising pixels, outlined"
      : "Most surprising dimensions, outlined";
    buildGrid($("grid"), "cell");
    buildGrid($("heatmap"), "heat");
    refreshGrid();
  }

  // ---- tables: the row editor ----------------------------------------------------------------

  /** A model edited as a row of columns rather than drawn: real-valued columns and no image
   * shape. With every column named it is the service's tabular model: rows go as objects. */
  function isTableModel(m) {
    return (
      !m.image_shape &&
      Array.isArray(m.dimensions) &&
      m.dimensions.some((d) => d.family === "gaussian_mixture")
    );
  }

  function allNamed() {
    return state.model.dimensions.every((d) => d.name);
  }

  function columnName(d) {
    return state.model.dimensions[d].name ?? `dimension ${d}`;
  }

  /** How answers key column d: its name, or its index as text. */
  function columnKey(d) {
    return state.model.dimensions[d].name ?? String(d);
  }

  /** The drawing grid or the row editor, and the words that go with each. */
  function showInputKind() {
    const table = state.table;
    $("table-input").hidden = !table;
    $("image-input").hidden = table;
    $("draw-title").textContent = table ? "Row" : "Input";
    $("lead-what").textContent = table
      ? "Fill in a row, score it, complete its missing columns, or sample new rows."
      : "Draw an image, score it, complete its unknown pixels, or sample new ones.";
    // Complexity correction compresses levels as bytes: the service refuses it for real values.
    $("corrected-row").hidden = table;
    $("corrected-hint").hidden = table;
    if (table) $("score-corrected").checked = false;
    $("sample-hint").textContent = `The same seed gives the same ${table ? "rows" : "images"}.`;
    $("complete-n").value = String(table ? TABLE_COMPLETIONS : 8);
  }

  /** Results of the other kind of model go: canvases mean nothing beside a row editor. */
  function clearResults() {
    for (const id of [
      "score-result",
      "anomaly-result",
      "score-p-text",
      "anomaly-note",
      "score-member",
      "heat-figure",
      "column-figure",
      "explain",
      "complete-info",
      "complete-legend",
      "complete-legend-levels",
      "probabilities",
    ]) {
      $(id).hidden = true;
    }
    $("completions").replaceChildren();
    $("samples").replaceChildren();
    $("score").dataset.stale = "false";
    $("complete").dataset.stale = "false";
  }

  function choices(dim) {
    if (dim.family === "bernoulli") return ["0", "1"];
    if (dim.family === "categorical") {
      return dim.labels ?? Array.from({ length: dim.classes }, (_, c) => String(c));
    }
    return Array.from({ length: dim.levels }, (_, c) => String(c));
  }

  /** A number field for a real value (or a long ordinal), else a list of the column's values. */
  function fieldFor(dim, d) {
    let field;
    if (dim.family === "gaussian_mixture") {
      field = document.createElement("input");
      field.type = "number";
      field.step = "any";
      field.inputMode = "decimal";
      field.placeholder = formatReal(dim.mean);
    } else if (dim.family === "ordinal" && dim.levels > SELECT_LEVELS) {
      field = document.createElement("input");
      field.type = "number";
      field.min = "0";
      field.max = String(dim.levels - 1);
      field.step = "1";
      field.inputMode = "numeric";
      field.placeholder = `0–${dim.levels - 1}`;
    } else {
      field = document.createElement("select");
      field.append(
        ...choices(dim).map((text, c) => {
          const option = document.createElement("option");
          option.value = String(c);
          option.textContent = text;
          return option;
        }),
      );
    }
    field.id = `col-${d}`;
    field.className = "column-field";
    return field;
  }

  function buildEditor() {
    $("row-editor").replaceChildren(
      ...state.model.dimensions.map((dim, d) => {
        const row = document.createElement("div");
        row.className = "editor-row";
        row.dataset.index = String(d);
        row.dataset.family = dim.family;
        const label = document.createElement("label");
        label.htmlFor = `col-${d}`;
        const name = document.createElement("span");
        name.className = "column-name";
        name.append(breakableName(d));
        const family = document.createElement("span");
        family.className = "column-family";
        family.textContent = familyText(dim);
        label.append(name, " ", family);
        const field = fieldFor(dim, d);
        const missing = document.createElement("label");
        missing.className = "missing";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.id = `col-${d}-missing`;
        box.setAttribute("aria-label", `${columnName(d)} missing`);
        missing.append(box, " missing");
        row.append(label, field, missing);
        field.addEventListener("input", () => {
          // Typing a value makes the column known; emptying a number field makes it missing.
          box.checked = field.tagName === "INPUT" && field.value === "" && !field.validity.badInput;
          refreshMissing(d);
          markStale();
        });
        box.addEventListener("change", () => {
          if (!box.checked && field.tagName === "INPUT" && field.value === "") {
            field.value = field.placeholder.includes("–") ? "0" : String(dim.mean);
          }
          refreshMissing(d);
          markStale();
        });
        return row;
      }),
    );
    setEditor(typicalValues());
  }

  function refreshMissing(d) {
    const missing = $(`col-${d}-missing`).checked;
    const row = $(`col-${d}`).closest(".editor-row");
    row.dataset.missing = String(missing);
  }

  /** Real columns at their training means, the others at their first level. */
  function typicalValues() {
    return state.model.dimensions.map((dim) =>
      dim.family === "gaussian_mixture" ? Number(dim.mean.toPrecision(6)) : 0,
    );
  }

  /** Per column, a number (a class's index for a categorical) or null (missing). */
  function setEditor(values) {
    values.forEach((value, d) => {
      const field = $(`col-${d}`);
      $(`col-${d}-missing`).checked = value === null;
      if (value !== null) field.value = String(value);
      else if (field.tagName === "INPUT") field.value = "";
      refreshMissing(d);
    });
    markStale();
  }

  /** The editor's row: per column a number (a class's index) or null for missing. */
  function editorValues() {
    return state.model.dimensions.map((dim, d) => {
      const field = $(`col-${d}`);
      if ($(`col-${d}-missing`).checked) return null;
      if (field.tagName === "SELECT") return Number(field.value);
      if (field.validity.badInput) throw new InputError(`${columnName(d)}: that is not a number.`);
      const text = field.value.trim();
      if (text === "") return null;
      const value = Number(text);
      if (!Number.isFinite(value)) {
        throw new InputError(`${columnName(d)}: "${text}" is not a number.`);
      }
      const level = Number.isInteger(value) && value >= 0 && value < dim.levels;
      if (dim.family === "ordinal" && !level) {
        throw new InputError(`${columnName(d)} takes a level 0–${dim.levels - 1}; got ${text}.`);
      }
      return value;
    });
  }

  /** The row as the API takes it: labels for labelled categoricals, null for missing; an object
   * keyed by column name where every column has one. */
  function tableInput(values) {
    const cells = values.map((value, d) => {
      const labels = state.model.dimensions[d].labels;
      return value !== null && labels ? labels[value] : value;
    });
    return allNamed() ? Object.fromEntries(cells.map((v, d) => [columnKey(d), v])) : cells;
  }

  /** An answered row (an object keyed by column name, or an array) as editor values. */
  function rowValues(row) {
    return state.model.dimensions.map((dim, d) => {
      const value = Array.isArray(row) ? row[d] : row[columnKey(d)];
      if (value === null || value === undefined) return null;
      return typeof value === "string" ? dim.labels.indexOf(value) : value;
    });
  }

  /** An answered value as a person reads it. */
  function cellText(d, value) {
    const dim = state.model.dimensions[d];
    if (value === null) return "missing";
    if (typeof value === "string") return value;
    if (dim.family === "gaussian_mixture") return formatReal(value);
    return dim.labels ? dim.labels[value] : String(value);
  }

  /** A column's name with break opportunities after "_" and "/", for long names in narrow
   * places (rather than breaking inside a word). */
  function breakableName(d) {
    const fragment = document.createDocumentFragment();
    columnName(d)
      .split(/(?<=[_/])/)
      .forEach((part, i) => {
        if (i) fragment.append(document.createElement("wbr"));
        fragment.append(part);
      });
    return fragment;
  }

  /** A small table of answered rows, showing the columns ``shown`` (indices); ``filled`` tints
   * them as a completion's filled-in values; ``use`` adds a button per row that puts the whole
   * row in the editor. */
  function rowsTable(rows, label, shown, filled, use) {
    const table = document.createElement("table");
    table.className = "data-table rows-table";
    table.setAttribute("aria-label", label);
    const head = document.createElement("tr");
    const heads = ["#", ...(use ? [""] : []), ...shown.map((d) => breakableName(d))];
    for (const text of heads) {
      const th = document.createElement("th");
      th.scope = "col";
      th.append(text);
      head.append(th);
    }
    table.createTHead().append(head);
    const body = table.createTBody();
    rows.forEach((row, i) => {
      const tr = document.createElement("tr");
      const number = document.createElement("th");
      number.scope = "row";
      number.textContent = String(i + 1);
      tr.append(number);
      if (use) {
        const cell = document.createElement("td");
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Use";
        button.setAttribute("aria-label", `Put row ${i + 1} in the editor`);
        button.addEventListener("click", () =>
          run(async () => {
            setEditor(rowValues(row));
            $("draw").scrollIntoView({ block: "nearest" });
          }),
        );
        cell.append(button);
        tr.append(cell);
      }
      for (const d of shown) {
        const cell = document.createElement("td");
        const answered = Array.isArray(row) ? row[d] : row[columnKey(d)];
        cell.dataset.column = columnKey(d);
        cell.dataset.value = JSON.stringify(answered);
        cell.textContent = cellText(d, answered);
        if (filled) cell.classList.add("filled");
        if (state.model.dimensions[d].family === "gaussian_mixture") cell.classList.add("number");
        tr.append(cell);
      }
      body.append(tr);
    });
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.append(table);
    return wrap;
  }

  /** Horizontal bars of signed values: each item is {name, value, text, label}; bars grow from 0
   * (left for negative values), scaled to the largest magnitude, or to ``top`` when given. */
  function horizontalBars(container, items, top) {
    const low = Math.min(0, ...items.map((item) => item.value));
    const high = top ?? Math.max(0, ...items.map((item) => item.value));
    const span = high - low || 1;
    const zero = (100 * -low) / span;
    container.replaceChildren(
      ...items.map((item) => {
        const row = document.createElement("div");
        row.className = "hbar-row";
        row.setAttribute("role", "listitem");
        row.setAttribute("aria-label", item.label);
        row.dataset.value = String(item.value);
        if (item.index !== undefined) row.dataset.index = String(item.index);
        const name = document.createElement("span");
        name.className = "hbar-name";
        name.textContent = item.name;
        name.title = item.name;
        const track = document.createElement("span");
        track.className = "hbar-track";
        track.style.setProperty("--zero", `${zero}%`);
        const bar = document.createElement("span");
        bar.className = item.value < 0 ? "hbar negative" : "hbar";
        const width = (100 * Math.abs(item.value)) / span;
        bar.style.left = `${item.value < 0 ? zero - width : zero}%`;
        bar.style.width = `${width}%`;
        track.append(bar);
        const text = document.createElement("span");
        text.className = "hbar-value";
        text.textContent = item.text;
        row.append(name, track, text);
        return row;
      }),
    );
  }

  /** Per column, −log p_k(x_d | the columns before d in member k's ordering), in nats. */
  function renderColumnBars(values, member, logps) {
    const surprise = logps.map((logp) => -logp);
    horizontalBars(
      $("column-bars"),
      surprise.map((value, d) => {
        const shown = cellText(d, values[d]);
        return {
          index: d,
          name: `${columnName(d)} = ${shown}`,
          value,
          text: `${value.toFixed(3)} nats`,
          label: `${columnName(d)} = ${shown}: ${value.toFixed(3)} nats of surprise`,
        };
      }),
    );
    const total = surprise.reduce((sum, value) => sum + value, 0);
    const negative = surprise.some((value) => value < 0);
    $("column-caption").textContent =
      "Surprise per column, −log p(x_d | the columns before it in member " +
      `${member.k}'s ordering), in nats; together ${total.toFixed(3)} nats, −log p_${member.k}(x). A real-valued ` +
      `column's is a negative log density in its own units, so it can be below 0` +
      (negative ? " (bars to the left of the line)." : ".");
    $("column-figure").hidden = false;
  }

  /** The estimated probabilities of each missing categorical column's classes, as bars. */
  function renderProbabilities(columns, ess) {
    const box = $("probabilities");
    const entries = Object.entries(columns);
    box.hidden = entries.length === 0;
    const figures = entries.map(([name, classes]) => {
      const figure = document.createElement("figure");
      figure.className = "probability";
      figure.dataset.column = name;
      const bars = document.createElement("div");
      bars.className = "hbars";
      bars.setAttribute("role", "list");
      bars.setAttribute("aria-label", `${name}: estimated probabilities`);
      horizontalBars(
        bars,
        Object.entries(classes).map(([label, p]) => ({
          name: label,
          value: p,
          text: `${(100 * p).toFixed(1)}%`,
          label: `${name} = ${label}: ${(100 * p).toFixed(1)}%`,
        })),
        1, // probabilities: a full bar is 1
      );
      const caption = document.createElement("figcaption");
      caption.textContent = `${name}: estimated p(class | observed columns)`;
      figure.append(bars, caption);
      return figure;
    });
    const title = document.createElement("h3");
    title.textContent = "Missing categorical columns";
    const note = document.createElement("p");
    note.className = "hint";
    note.textContent =
      "Each class's exact conditional given a completion's other columns, averaged over the " +
      "completions: an estimate as good as they are" +
      (ess === null ? "." : ` (effective sample size ${ess.toFixed(1)}).`);
    box.replaceChildren(title, ...figures, note);
  }

  async function fillFromSample() {
    requireModel();
    const body = jsonBody({ num_samples: 1 }, randomSeed());
    const result = await api("POST", modelPath("sample"), body);
    setEditor(rowValues(result.samples[0]));
  }

  // ---- drawing grid --------------------------------------------------------------------------

  function cellName(d) {
    if (!state.model.image_shape) return `dimension ${d}`;
    return `row ${Math.floor(d / state.cols) + 1}, column ${(d % state.cols) + 1}`;
  }

  /** Cells laid out row by row; rows are ARIA rows but CSS-transparent so one CSS grid holds all. */
  function buildGrid(container, prefix) {
    container.replaceChildren();
    container.style.setProperty("--cols", String(state.cols));
    const cellSize = state.model.image_shape ? Math.max(10, Math.floor(336 / state.cols)) : 22;
    container.style.setProperty("--grid-width", `${Math.min(360, cellSize * state.cols)}px`);
    for (let r = 0; r < state.rows; r += 1) {
      const row = document.createElement("div");
      row.className = "grid-row";
      if (container.getAttribute("role") === "grid") row.setAttribute("role", "row");
      for (let c = 0; c < state.cols; c += 1) {
        const d = r * state.cols + c;
        if (d >= state.model.dim) break;
        const cell = document.createElement("div");
        cell.className = prefix;
        cell.id = `${prefix}-${d}`;
        cell.dataset.index = String(d);
        if (prefix === "cell") cell.setAttribute("role", "gridcell");
        row.append(cell);
      }
      container.append(row);
    }
  }

  function stateName(value) {
    if (value === null) return "unknown";
    return value === 1 ? "on" : "off";
  }

  /** The grey of a level: white for 0, ink for the top level, as the sample PNGs draw them. */
  function grey(value, top) {
    const g = Math.round(255 - (value / top) * (255 - 17));
    return `rgb(${g}, ${g}, ${g})`;
  }

  /** The same level tinted blue: a completion's filled-in pixel. */
  function blueGrey(value, top) {
    const g = Math.round(255 - (value / top) * 200);
    return `rgb(${Math.round(g * 0.55)}, ${Math.round(g * 0.75)}, ${g})`;
  }

  function refreshCell(d) {
    const cell = $(`cell-${d}`);
    const value = state.pixels[d];
    if (state.maxLevel < 2 || value === null) {
      const name = stateName(value);
      cell.dataset.state = name;
      cell.style.background = "";
      cell.setAttribute("aria-label", `${cellName(d)}: ${name}`);
      return;
    }
    cell.dataset.state = "level";
    cell.dataset.level = String(value);
    cell.style.background = grey(value, state.levels[d]);
    cell.setAttribute("aria-label", `${cellName(d)}: level ${value} of ${state.levels[d]}`);
  }

  function refreshGrid() {
    state.pixels.forEach((_, d) => refreshCell(d));
    moveCursor(state.cursor);
    syncRowText();
  }

  function syncRowText() {
    const cells = state.pixels.map((v) => (v === null ? "?" : String(v)));
    $("row-text").value = cells.join(state.maxLevel < 2 ? "" : ",");
  }

  /** Results shown for an earlier drawing are dimmed and labelled, never silently kept; the
   * drawing itself loses the outlines of the last score's explanation. */
  function markStale() {
    if (!$("score-result").hidden) $("score").dataset.stale = "true";
    if (!$("complete-info").hidden) $("complete").dataset.stale = "true";
    outline($("grid"), []);
  }

  function setPixel(d, value) {
    if (state.pixels[d] === value) return;
    state.pixels[d] = value;
    refreshCell(d);
    syncRowText();
    markStale();
  }

  function brush() {
    return document.querySelector('input[name="brush"]:checked').value;
  }

  /** The first cell of a stroke decides what the whole stroke paints: the toggle of that cell
   * (between off and the brush's intensity, for grey levels). */
  function strokeValue(d) {
    const current = state.pixels[d];
    if (brush() === "unknown") return current === null ? 0 : null;
    const ink = Math.min(Number($("intensity").value), state.levels[d]);
    return current === ink ? 0 : ink;
  }

  function moveCursor(d) {
    const old = document.querySelector("#grid .cursor");
    if (old) old.classList.remove("cursor");
    state.cursor = Math.min(Math.max(d, 0), state.model.dim - 1);
    $(`cell-${state.cursor}`).classList.add("cursor");
    $("grid").setAttribute("aria-activedescendant", `cell-${state.cursor}`);
  }

  function cellAt(x, y) {
    const element = document.elementFromPoint(x, y);
    return element && element.classList.contains("cell") ? Number(element.dataset.index) : null;
  }

  function wireGrid() {
    const grid = $("grid");
    grid.addEventListener("pointerdown", (event) => {
      const d = cellAt(event.clientX, event.clientY);
      if (d === null || !state.model) return;
      event.preventDefault();
      grid.focus();
      state.painting = true;
      state.paintValue = strokeValue(d);
      setPixel(d, state.paintValue);
      moveCursor(d);
      grid.setPointerCapture(event.pointerId);
    });
    grid.addEventListener("pointermove", (event) => {
      if (!state.painting) return;
      const d = cellAt(event.clientX, event.clientY);
      if (d !== null) setPixel(d, state.paintValue);
    });
    const stop = () => {
      state.painting = false;
    };
    grid.addEventListener("pointerup", stop);
    grid.addEventListener("pointercancel", stop);
    grid.addEventListener("keydown", (event) => {
      if (!state.model) return;
      const moves = {
        ArrowLeft: -1,
        ArrowRight: 1,
        ArrowUp: -state.cols,
        ArrowDown: state.cols,
      };
      if (event.key in moves) {
        moveCursor(state.cursor + moves[event.key]);
      } else if (event.key === " " || event.key === "Enter") {
        setPixel(state.cursor, strokeValue(state.cursor));
      } else {
        return;
      }
      event.preventDefault();
    });
  }

  function parseRowText() {
    const dim = state.model.dim;
    if (state.maxLevel < 2) {
      const text = $("row-text").value.replace(/[\s,]/g, "");
      if (text.length !== dim || /[^01?]/.test(text)) {
        syncRowText();
        throw new InputError(`The row needs exactly ${dim} characters of 0, 1 or ?; got "${text}".`);
      }
      state.pixels = [...text].map((ch) => (ch === "?" ? null : Number(ch)));
    } else {
      const cells = $("row-text").value.split(",").map((cell) => cell.trim());
      const bad = cells.findIndex(
        (cell, d) => cell !== "?" && !(/^[0-9]+$/.test(cell) && Number(cell) <= state.levels[d]),
      );
      if (cells.length !== dim || bad >= 0) {
        syncRowText();
        const what = cells.length !== dim ? `got ${cells.length} values` : `value ${bad + 1} is "${cells[bad]}"`;
        throw new InputError(`The row needs ${dim} levels (0-${state.maxLevel}) or ?; ${what}.`);
      }
      state.pixels = cells.map((cell) => (cell === "?" ? null : Number(cell)));
    }
    refreshGrid();
    markStale();
  }

  /** The input's values: the row editor's for a table, else the drawing's (null: unknown). */
  function currentValues() {
    return state.table ? editorValues() : state.pixels.slice();
  }

  /** ``values`` as the API takes them: a table's row object, image-shaped for image models,
   * otherwise flat. */
  function inputRow(values) {
    if (state.table) return tableInput(values);
    if (!state.model.image_shape) return values.slice();
    const rows = [];
    for (let r = 0; r < state.rows; r += 1) {
      rows.push(values.slice(r * state.cols, (r + 1) * state.cols));
    }
    return rows;
  }

  async function loadImage() {
    requireModel();
    const body = jsonBody({ num_samples: 1 }, randomSeed());
    const result = await api("POST", modelPath("sample"), body);
    state.pixels = result.samples[0].slice();
    refreshGrid();
    markStale();
  }

  // ---- score ---------------------------------------------------------------------------------

  function heatColor(fraction) {
    const scaled = Math.min(Math.max(fraction, 0), 1) * (HEAT_STOPS.length - 1);
    const i = Math.min(Math.floor(scaled), HEAT_STOPS.length - 2);
    const t = scaled - i;
    const rgb = HEAT_STOPS[i].map((a, j) => Math.round(a + t * (HEAT_STOPS[i + 1][j] - a)));
    return `rgb(${rgb.join(",")})`;
  }

  /** Member with the highest posterior weight w_k p_k(x) / p(x) for this input, and that weight. */
  function likeliestMember(weights, perMember) {
    const joint = perMember.map((logp, k) => Math.log(weights[k]) + logp);
    const top = Math.max(...joint);
    const total = joint.reduce((sum, value) => sum + Math.exp(value - top), 0);
    const k = joint.indexOf(top);
    return { k, posterior: 1 / total };
  }

  /** Outline the cells of ``explained`` (API items, most surprising first) in ``container``. */
  function outline(container, explained) {
    container.querySelectorAll(".explained").forEach((cell) => {
      cell.classList.remove("explained");
      delete cell.dataset.rank;
    });
    explained.forEach((item, rank) => {
      const cell = container.querySelector(`[data-index="${item.index}"]`);
      cell.classList.add("explained");
      cell.dataset.rank = String(rank + 1);
    });
  }

  function renderHeat(surprise, pixels, member, explained) {
    const scale = Math.max(Math.LN2, ...surprise);
    surprise.forEach((value, d) => {
      const cell = $(`heat-${d}`);
      cell.style.background = heatColor(value / scale);
      cell.dataset.surprise = String(value);
      cell.dataset.state = stateName(pixels[d]);
      cell.title = `${cellName(d)}: ${value.toFixed(3)} nats`;
    });
    outline($("heatmap"), explained);
    const total = surprise.reduce((sum, value) => sum + value, 0);
    $("heatmap").setAttribute(
      "aria-label",
      `Heat map of per-pixel surprise under member ${member.k}; total ${total.toFixed(3)} nats; ` +
        `the ${explained.length} most surprising are outlined and listed below`,
    );
    $("heat-caption").textContent =
      `Per-pixel surprise −log p(x_d | x_<d) under member ${member.k}; white 0, dark red ` +
      `${scale.toFixed(2)} nats. Dots mark pixels that are on; blue outlines the ` +
      `${explained.length} most surprising.`;
    $("heat-figure").hidden = false;
  }

  function renderExplanation(explained) {
    $("explain-list").replaceChildren(
      ...explained.map((item) => {
        const entry = document.createElement("li");
        entry.dataset.index = String(item.index);
        entry.dataset.surprise = String(item.surprise);
        entry.textContent =
          `${cellName(item.index)}, ${stateName(item.value)}: ` +
          `${item.surprise.toFixed(3)} nats of surprise`;
        return entry;
      }),
    );
    outline($("grid"), explained);
    $("explain").hidden = false;
  }

  /** Two significant digits, without trailing zeros: 0.031, 0.5, 1. */
  function shortNumber(value) {
    return String(Number(value.toPrecision(2)));
  }

  /** What p says in words. With the n calibration rows known, p = (1 + k) / (n + 1) gives the
   * exact count k of held-out rows scoring as low: "about p" would claim some when k is 0. */
  function pValueSentence(p, corrected) {
    const what = corrected ? "complexity-corrected log-likelihood" : "log-likelihood";
    const kind = state.model.image_shape ? "images" : "rows";
    const n = state.model.calibration_rows;
    const head = `p = ${shortNumber(p)}: `;
    const tail = `have a ${what} this low or lower.`;
    if (!Number.isInteger(n)) {
      return `${head}about ${shortNumber(100 * p)}% of held-out normal ${kind} ${tail}`;
    }
    const k = Math.round(p * (n + 1)) - 1;
    const count = k === 0 ? "none" : `${k} (${shortNumber((100 * k) / n)}%)`;
    return `${head}${count} of the ${n} held-out normal ${kind} ${tail}`;
  }

  function renderAnomaly(result) {
    const p = result.p_value[0];
    const corrected = result.score === "complexity_corrected";
    $("score-p").textContent = shortNumber(p);
    $("score-p").dataset.p = String(p);
    $("score-anomaly").textContent =
      `${result.anomaly_score[0].toFixed(3)} ` +
      (corrected ? "(−log p(x) − L(x), complexity-corrected)" : "(−log p(x), nats)");
    const verdict = $("score-verdict");
    if (result.anomalous === undefined) {
      verdict.textContent = "No threshold: set α to flag anomalous inputs.";
      verdict.dataset.anomalous = "";
    } else {
      const flagged = result.anomalous[0];
      verdict.textContent = flagged
        ? `Anomalous at α = ${result.alpha} (p ≤ α)`
        : `Not anomalous at α = ${result.alpha} (p > α)`;
      verdict.dataset.anomalous = String(flagged);
    }
    $("score-p-text").textContent = pValueSentence(p, corrected);
    $("anomaly-result").hidden = false;
    $("score-p-text").hidden = false;
  }

  function readAlpha() {
    const text = $("score-alpha").value.trim();
    if (text === "") return null;
    const alpha = Number(text);
    if (!(alpha > 0 && alpha < 1)) {
      throw new InputError("α must be a number between 0 and 1, or empty for the default.");
    }
    return alpha;
  }

  /** The message of a 422 that refuses p-values (an artifact without calibration rows), or null. */
  function pValueRefusal(error) {
    if (!(error instanceof ApiError) || error.status !== 422 || !Array.isArray(error.detail)) {
      return null;
    }
    const item = error.detail.find((entry) => (entry.loc || []).join(".") === "body.p_value");
    return item ? item.msg : null;
  }

  /** A complete row's score with p-value and explanation; where the artifact refuses p-values,
   * the same score without them and the refusal's message, so the rest still shows. */
  async function scoreComplete(values) {
    const alpha = readAlpha();
    const fields = { inputs: [inputRow(values)], per_member: true, per_dimension: true };
    // A table's bars show every column: no list of the most surprising ones.
    if (!state.table) fields.explain = Math.min(EXPLAIN, state.model.dim);
    const anomaly = { p_value: true };
    if (alpha !== null) anomaly.alpha = alpha;
    if ($("score-corrected").checked) anomaly.score = "complexity_corrected";
    try {
      const body = jsonBody({ ...fields, ...anomaly });
      return { result: await api("POST", modelPath("log-likelihood"), body), refusal: null };
    } catch (error) {
      const refusal = pValueRefusal(error);
      if (refusal === null) throw error;
      return { result: await api("POST", modelPath("log-likelihood"), jsonBody(fields)), refusal };
    }
  }

  async function score() {
    requireModel();
    const pixels = currentValues();
    const unknown = pixels.filter((v) => v === null).length;
    const unit = state.table ? "columns" : "pixels";
    // A seed makes a sampled marginal reproducible: the same call gives the same estimate.
    const seed = unknown ? randomSeed() : undefined;
    const marginal = () =>
      api("POST", modelPath("log-likelihood"), jsonBody({ inputs: [inputRow(pixels)] }, seed));
    const { result, refusal } = unknown
      ? { result: await marginal() }
      : await scoreComplete(pixels);
    const method = result.method[0];
    // No bits per dimension for densities (real-valued columns): nats in the data's units only.
    const density = result.bits_per_dim === undefined;
    $("score-ll").textContent =
      `${result.log_likelihood[0].toFixed(3)} nats` + (density ? " (a log density)" : "");
    $("score-bits").textContent = density ? "" : result.bits_per_dim[0].toFixed(4);
    $("score-bits").hidden = $("score-bits-label").hidden = density;
    const memberText = $("score-member");
    if (method === "exact") {
      $("score-method").textContent = unknown
        ? `exact marginal of the ${pixels.length - unknown} observed ${unit}`
        : "exact";
    } else {
      const ess = result.effective_sample_size[0];
      $("score-method").textContent =
        `importance-sampled marginal of the ${pixels.length - unknown} observed ${unit}, ` +
        `standard error ${result.standard_error[0].toFixed(3)} nats, ` +
        `effective sample size ${ess.toFixed(1)}, seed ${seed}`;
    }
    $("score-method").dataset.seed = seed ?? "";
    for (const id of ["anomaly-result", "score-p-text", "anomaly-note", "explain"]) {
      $(id).hidden = true;
    }
    outline($("grid"), []);
    if (unknown) {
      $("heat-figure").hidden = true;
      $("column-figure").hidden = true;
      delete memberText.dataset.member;
      memberText.textContent = state.table
        ? "The per-column surprise and the p-value need every column known: fill in the " +
          "missing ones to see them."
        : "The heat map, p-value and explanation need every pixel known: turn unknown pixels " +
          "on or off to see them.";
    } else {
      const member = likeliestMember(state.model.mixture_weights, result.per_member[0]);
      if (state.table) {
        renderColumnBars(pixels, member, result.per_dimension[0][member.k]);
      } else {
        const surprise = result.per_dimension[0][member.k].map((logp) => -logp);
        const explained = result.explanation[0];
        renderHeat(surprise, pixels, member, explained);
        renderExplanation(explained);
      }
      memberText.textContent =
        `Member ${member.k} explains this ${state.table ? "row" : "input"} best ` +
        `(posterior weight ${member.posterior.toFixed(3)}).`;
      memberText.dataset.member = String(member.k);
      if (refusal === null) {
        renderAnomaly(result);
      } else {
        $("anomaly-note").textContent = `No p-value: ${refusal}.`;
        $("anomaly-note").hidden = false;
      }
    }
    memberText.hidden = false;
    $("score-result").hidden = false;
    $("score").dataset.stale = "false";
  }

  // ---- images: completions and samples -------------------------------------------------------

  /** One small canvas per row; ``observed`` (or null) says which pixels came from the input. */
  function thumbnail(values, observed, label) {
    const scale = Math.max(2, Math.floor(THUMB_PIXELS / Math.max(state.rows, state.cols)));
    const canvas = document.createElement("canvas");
    canvas.width = state.cols * scale;
    canvas.height = state.rows * scale;
    canvas.dataset.scale = String(scale);
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", label);
    const context = canvas.getContext("2d");
    context.fillStyle = COLORS.padding;
    context.fillRect(0, 0, canvas.width, canvas.height);
    values.forEach((value, d) => {
      const given = observed !== null && observed[d] !== null;
      if (state.maxLevel > 1) {
        // Grey levels; a completion's filled-in pixels are tinted blue.
        context.fillStyle = grey(value, state.levels[d]);
        if (observed !== null && !given) context.fillStyle = blueGrey(value, state.levels[d]);
      } else if (given) context.fillStyle = value ? COLORS.on : COLORS.off;
      else if (observed !== null) context.fillStyle = value ? COLORS.filledOn : COLORS.filledOff;
      else context.fillStyle = value ? COLORS.on : COLORS.off;
      const r = Math.floor(d / state.cols);
      const c = d % state.cols;
      context.fillRect(c * scale, r * scale, scale, scale);
    });
    return canvas;
  }

  async function complete() {
    requireModel();
    const pixels = currentValues();
    const unknown = pixels.filter((v) => v === null).length;
    if (!unknown) {
      throw new InputError(
        state.table
          ? "Mark some columns missing first: Complete fills them in."
          : "Mark some pixels with the Unknown brush first: Complete fills them in.",
      );
    }
    const count = readCount("complete-n", "Completions");
    const seed = randomSeed();
    const body = jsonBody({ inputs: [inputRow(pixels)], num_samples: count }, seed);
    const result = await api("POST", modelPath("complete"), body);
    const method = result.method[0];
    const ess = result.effective_sample_size[0];
    const essText = ess === null ? "" : `, effective sample size ${ess.toFixed(1)}`;
    const info = $("complete-info");
    info.textContent =
      `${count} completion${count === 1 ? "" : "s"} of ${unknown} ` +
      `${state.table ? "missing columns" : "unknown pixels"}; ` +
      `method ${method}${essText}; seed ${seed}.` +
      (state.table ? " The missing columns' values (the others are as given):" : "") +
      (result.warning ? ` Warning: ${result.warning}` : "");
    info.dataset.seed = seed;
    info.hidden = false;
    $("complete").dataset.stale = "false";
    if (state.table) {
      // The observed columns are as given in every completion: only the filled-in ones show.
      const missing = pixels.flatMap((value, d) => (value === null ? [d] : []));
      const label = `Completions of the missing columns, seed ${seed}`;
      $("completions").replaceChildren(
        rowsTable(result.completions[0], label, missing, true, false),
      );
      renderProbabilities((result.probabilities || [{}])[0], ess);
      return;
    }
    $(state.maxLevel > 1 ? "complete-legend-levels" : "complete-legend").hidden = false;
    $("completions").replaceChildren(
      ...result.completions[0].map((values, i) =>
        thumbnail(values, pixels, `completion ${i + 1} of ${count}`),
      ),
    );
    $("complete").dataset.stale = "false";
  }

  async function sample() {
    requireModel();
    const count = readCount("sample-n", "Samples");
    const seed = $("sample-seed").value.trim();
    if (!/^[0-9]+$/.test(seed)) throw new InputError("Seed must be a whole number ≥ 0.");
    const result = await api("POST", modelPath("sample"), jsonBody({ num_samples: count }, seed));
    if (state.table) {
      const columns = state.model.dimensions.map((_, d) => d);
      const label = `Samples, seed ${seed}`;
      $("samples").replaceChildren(rowsTable(result.samples, label, columns, false, true));
      return;
    }
    $("samples").replaceChildren(
      ...result.samples.map((values, i) =>
        thumbnail(values, null, `sample ${i + 1} of ${count}, seed ${seed}`),
      ),
    );
  }

  // ---- wiring --------------------------------------------------------------------------------

  function onClick(id, action, section) {
    $(id).addEventListener("click", () => run(action, section && $(section)));
  }

  function wire() {
    wireGrid();
    $("intensity").addEventListener("input", () => {
      $("intensity-value").textContent = $("intensity").value;
    });
    onClick("clear", async () => {
      requireModel();
      state.pixels.fill(0);
      refreshGrid();
      markStale();
    });
    onClick("clear-unknown", async () => {
      requireModel();
      state.pixels = state.pixels.map((v) => (v === null ? 0 : v));
      refreshGrid();
      markStale();
    });
    onClick("load-image", loadImage, "draw");
    onClick("fill-sample", fillFromSample, "draw");
    onClick("fill-typical", async () => setEditor(typicalValues()), "draw");
    onClick("all-missing", async () => setEditor(state.model.dimensions.map(() => null)), "draw");
    onClick("score-button", score, "score");
    onClick("complete-button", complete, "complete");
    onClick("sample-button", sample, "sample");
    onClick(
      "new-seed",
      async () => {
        $("sample-seed").value = randomSeed();
        await sample();
      },
      "sample",
    );
    $("model-picker").addEventListener("change", () =>
      run(async () => {
        state.modelName = $("model-picker").value;
        markStale();
        await loadModel();
      }, $("card")),
    );
    $("row-text").addEventListener("change", () =>
      run(async () => {
        requireModel();
        parseRowText();
      }),
    );
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.apiKey = $("api-key").value;
      $("api-key").value = "";
      $("key-form").hidden = true;
      const pending = state.retry;
      state.retry = null;
      if (pending) run(pending.action, pending.section);
    });
  }

  wire();
  run(loadModels, $("card"));
})();
