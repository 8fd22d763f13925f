"""``make bench``: every figure of issue 4 in one run; prints a table, writes bench-results/*.json.

Baselines run in the same process or the same minutes as the figures they judge; HTTP rounds are
interleaved (no-op, batching on, batching off) and repeated, and the spread is reported.
"""

import argparse
import json
import time
from datetime import UTC, datetime
from functools import partial

from service.inference.engine import Engine
from service.settings import available_cpus
from tests.bench import bench_http, bench_inprocess, levels_sampling
from tests.bench.common import RESULTS, machine, reference_artifact, spread
from tests.servers import free_port


def http(artifact, rounds: int, requests: int, time_limit: float, processes: int) -> dict:
    """Rows 2, 3 and 6: four servers up at once, load rounds interleaved between them."""
    ports = {name: free_port() for name in ("noop", "typical", "on", "off")}
    out: dict[str, object] = {"ready_s": {}, "rss_mb": {}}
    single: dict[str, list[dict]] = {name: [] for name in ports}
    bulk: dict[str, list[dict]] = {name: [] for name in ("on", "noop", "typical")}
    # Issue 13: 64 clients x 100 rows, 6,400 rows in flight, which a 4,096-row queue refused.
    batch_load: list[dict] = []
    inproc: list[float] = []  # onnxruntime at batch 100 in the same minutes as the HTTP runs
    engine = Engine.load(artifact, available_cpus())
    # V2 infer on the batching server, 100 rows x 4 clients: a JSON body, a binary tensor body.
    v2: dict[str, list[dict]] = {"json": [], "binary": []}
    with (
        bench_http.noop_server(ports["noop"]) as noop,
        bench_http.noop_server(ports["typical"], "typical") as typical,
        bench_http.made_server(artifact, ports["on"], batching=True) as on,
        bench_http.made_server(artifact, ports["off"], batching=False) as off,
    ):
        servers = {"noop": noop, "typical": typical, "on": on, "off": off}
        for name, port in ports.items():
            bench_http.load(port, 1, 8, 200, 10.0)  # warm-up
            out["ready_s"][name] = servers[name]["ready_s"]
            out["rss_mb"][f"{name} after warm-up"] = bench_http.rss_mb(servers[name]["pid"])
        for _ in range(rounds):
            for name, port in ports.items():
                single[name].append(bench_http.load(port, 1, 64, requests, time_limit, processes))
            for name, runs in bulk.items():
                runs.append(bench_http.load(ports[name], 100, 4, requests // 20, time_limit))
            batch_load.append(bench_http.load(ports["on"], 100, 64, requests // 5, time_limit))
            for form, runs in v2.items():
                v2_request = partial(bench_http.v2_request, engine.manifest.name, form == "binary")
                shape = (ports["on"], 100, 4, requests // 20, time_limit)  # row 3's
                runs.append(bench_http.load(*shape, request=v2_request))
            inproc += bench_inprocess.onnx_rows_per_second(engine, 100)
        for name in ("on", "off"):
            out["rss_mb"][f"{name} after load"] = bench_http.rss_mb(servers[name]["pid"])
    out["one_row_64_clients"] = {name: _summary(runs) for name, runs in single.items()}
    out["hundred_rows_4_clients"] = {name: _summary(runs) for name, runs in bulk.items()}
    out["hundred_rows_64_clients"] = _summary(batch_load)
    out["v2_hundred_rows_4_clients"] = {form: _summary(runs) for form, runs in v2.items()}
    out["in_process_batch_100_rows_per_s"] = spread(inproc)
    return out


def _summary(runs: list[dict]) -> dict:
    keys = ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms", "client_cpu_share")
    summary = {key: spread([run[key] for run in runs]) for key in keys}
    summary["failed"] = sum(run["failed"] for run in runs)
    return summary


def table(result: dict) -> str:
    """The issue's six rows: figure, baseline, ratio, target."""
    ip, web = result["in_process"], result["http"]
    ceiling = ip["ceiling_rows_per_s"]["max"]  # the best sgemm run is the machine's rate
    lines = [
        "| # | figure | value (median, min-max) | baseline | ratio | target |",
        "|---|---|---|---|---|---|",
    ]

    def row(n, what, value, base="", ratio="", target=""):
        lines.append(f"| {n} | {what} | {value} | {base} | {ratio} | {target} |")

    sg = ip["sgemm_flops"]
    row(1, "sgemm 2048^2 via onnxruntime, GFLOP/s", _fmt(sg, 1e-9), "", "", "")
    row(
        1,
        "ceiling rows/s (best sgemm / FLOPs per row)",
        f"{ceiling:,.0f}",
        f"{ip['ensemble_flops_per_row'] / 1e6:.1f} MFLOP/row",
        "",
        "",
    )
    for batch in ("1", "16", "256"):
        r = ip["onnx_rows_per_s"][batch]
        row(
            1,
            f"in-process onnxruntime rows/s, batch {batch}",
            _fmt(r),
            "ceiling",
            f"{r['median'] / ceiling:.0%}",
            "",
        )
    one = web["one_row_64_clients"]
    on, off, noop, typical = (one[k]["requests_per_s"] for k in ("on", "off", "noop", "typical"))
    row(
        2,
        "HTTP 1 row x 64 clients, batching on, req/s",
        _fmt(on),
        f"off {_fmt(off)}",
        f"{on['median'] / off['median']:.2f}x",
        ">= 2x",
    )
    row(
        2,
        "same, vs no-op endpoint parsing the same body as made-serve does",
        _fmt(on),
        f"no-op {_fmt(noop)}",
        f"{on['median'] / noop['median']:.0%}",
        ">= 60% (aim 80%)",
    )
    row(
        2,
        "same, vs no-op endpoint parsing it with a pydantic model",
        _fmt(on),
        f"no-op {_fmt(typical)}",
        f"{on['median'] / typical['median']:.0%}",
        "> 67% (MLServer's)",
    )
    for name in ("on", "off", "noop", "typical"):
        row(
            2,
            f"latency p50 / p99 ms ({name})",
            f"{one[name]['p50_ms']['median']:.1f} / {one[name]['p99_ms']['median']:.1f}",
            "",
            "",
            "p99 <= 50" if name == "on" else "",
        )
    row(
        2,
        "client CPU (cores) during the on / off / no-op / pydantic no-op runs",
        " / ".join(
            f"{one[k]['client_cpu_share']['median']:.2f}" for k in ("on", "off", "noop", "typical")
        ),
        "",
        "",
        "",
    )
    bulk = {k: v["rows_per_s"] for k, v in web["hundred_rows_4_clients"].items()}
    inproc = web["in_process_batch_100_rows_per_s"]  # measured between the HTTP rounds
    row(
        3,
        "HTTP 100 rows/request x 4 clients, rows/s",
        _fmt(bulk["on"]),
        f"in-process b=100 {_fmt(inproc)}",
        f"{bulk['on']['median'] / inproc['median']:.0%}",
        ">= 80%",
    )
    for name, what in (("typical", "a pydantic model"), ("noop", "made-serve's decoder")):
        row(
            3,
            f"same, vs no-op endpoint parsing with {what}",
            _fmt(bulk["on"]),
            f"no-op {_fmt(bulk[name])}",
            f"{bulk['on']['median'] / bulk[name]['median']:.2f}x",
            "> 1x" if name == "typical" else "",
        )
    v2 = {k: v["rows_per_s"] for k, v in web["v2_hundred_rows_4_clients"].items()}
    row(
        3,
        "V2 infer 100 rows x 4 clients, JSON body (INT32), rows/s",
        _fmt(v2["json"]),
        f"/v1 {_fmt(bulk['on'])}",
        f"{v2['json']['median'] / bulk['on']['median']:.2f}x",
        "",
    )
    row(
        3,
        "same, binary tensor body (BOOL in, FP64 out), rows/s",
        _fmt(v2["binary"]),
        f"JSON body {_fmt(v2['json'])}",
        f"{v2['binary']['median'] / v2['json']['median']:.2f}x",
        "",
    )
    many = web["hundred_rows_64_clients"]
    row(
        3,
        "HTTP 100 rows/request x 64 clients, default settings, rows/s",
        _fmt(many["rows_per_s"]),
        f"in-process b=100 {_fmt(inproc)}",
        f"{many['rows_per_s']['median'] / inproc['median']:.0%}",
        "",
    )
    row(3, "same, answers other than 2xx (all runs)", f"{many['failed']:,}", "", "", "0")
    s = ip["sampling"]
    row(
        4,
        "sampling 256 in one call, samples/s",
        _fmt(s["fast"]),
        f"naive {s['naive']:.1f}",
        f"{s['fast']['median'] / s['naive']:.0f}x",
        ">= 20x and >= 10,000/s",
    )
    for name, levels in result.get("levels_sampling", {}).items():
        row(
            4,
            f"sampling {name} ({levels['model']}), samples/s",
            _fmt(levels["fast"]),
            f"naive {levels['naive']:.1f}",
            f"{levels['fast']['median'] / levels['naive']:.0f}x",
            ">= 10,000/s" if name == "digits-levels" else "reported",
        )
    for name, c in ip["completion"].items():
        row(
            5,
            f"completion {name}, completions/s [{'/'.join(c['method'])}]",
            _fmt(c["rate"]),
            "",
            "",
            "",
        )
    for name, mb in web["rss_mb"].items():
        made = name.startswith(("on", "off"))
        row(6, f"RSS {name}, MB", f"{mb:.0f}", "", "", "<= 400" if made else "")
    for name, seconds in web["ready_s"].items():
        row(
            6,
            f"start to ready, s ({name})",
            f"{seconds:.2f}",
            "",
            "",
            "<= 3" if name in ("on", "off") else "",
        )
    return "\n".join(lines)


def _fmt(s: dict, scale: float = 1.0) -> str:
    return f"{s['median'] * scale:,.0f} ({s['min'] * scale:,.0f}-{s['max'] * scale:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="repeats of every HTTP load run")
    parser.add_argument("--requests", type=int, default=3000, help="requests per 1-row run")
    parser.add_argument("--time-limit", type=float, default=15.0, help="seconds per load run")
    parser.add_argument("--client-processes", type=int, default=1)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    artifact, natural = reference_artifact(), reference_artifact("natural")
    started = time.time()
    result = {"machine": machine(), "artifact": str(artifact)}
    result["in_process"] = bench_inprocess.run(artifact, natural)
    result["levels_sampling"] = levels_sampling.run()
    result["http"] = http(
        artifact, args.rounds, args.requests, args.time_limit, args.client_processes
    )
    result["machine_after"] = machine()["load_average"]
    result["seconds"] = time.time() - started
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"bench-{stamp}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(result, indent=1, default=float))
    text = table(result)
    print(text)
    (RESULTS / "latest.md").write_text(text + "\n")
    print(f"\nwritten to {RESULTS}/bench-{stamp}.json ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
