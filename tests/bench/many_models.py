"""Many models in one process: 64 clients x 1 row spread over 1, 2 and 4 models of a repository,
against the same model served alone (``--model``), and resident memory per extra loaded model.

``python -m tests.bench.many_models``: the reference Fashion-MNIST model (``make bench``'s) copied
into a repository four times; the servers are up at once and their load rounds interleaved, so
every figure is judged against a baseline measured in the same minutes.
"""

import argparse
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

from tests.bench import bench_http
from tests.bench.common import RESULTS, machine, reference_artifact, spread
from tests.servers import free_port

SPREADS = (1, 2, 4)  # models the requests are spread over


def model_request(models: int, rows: int, dim: int, seed: int) -> tuple[bytes, bytes]:
    """A POST /v1/models/m{seed % models}/log-likelihood: the load cycles through the bodies, so
    the requests go round-robin over ``models`` models."""
    head = f"POST /v1/models/m{seed % models}/log-likelihood HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    return head.encode() + b"Content-Type: application/json\r\n", bench_http.body(rows, dim, seed)


def repository_server(root: Path, port: int):
    made = Path(sys.executable).parent / "made-serve"
    command = [str(made), "--model-repository", str(root), "--host", "127.0.0.1"]
    env = {"MADE_LOG_LEVEL": "warning"}
    return bench_http.server([*command, "--port", str(port)], env, port)


def run(rounds: int, requests: int, time_limit: float) -> dict:
    artifact = reference_artifact()
    with tempfile.TemporaryDirectory(prefix="made-many-models-") as scratch:
        repositories = {}
        for count in SPREADS:
            root = Path(scratch) / f"repository-{count}"
            for i in range(count):
                shutil.copytree(artifact, root / f"m{i}")
            repositories[count] = root
        ports = {"alone": free_port(), **{count: free_port() for count in SPREADS}}
        loads: dict[object, list[dict]] = {name: [] for name in ports}
        rss: dict[object, float] = {}
        with (
            bench_http.made_server(artifact, ports["alone"], batching=True) as alone,
            repository_server(repositories[1], ports[1]) as one,
            repository_server(repositories[2], ports[2]) as two,
            repository_server(repositories[4], ports[4]) as four,
        ):
            servers = {"alone": alone, 1: one, 2: two, 4: four}
            requests_of = {"alone": bench_http.v1_request}
            requests_of |= {count: partial(model_request, count) for count in SPREADS}
            for name, port in ports.items():
                bench_http.load(port, 1, 8, 200, 10.0, request=requests_of[name])  # warm-up
                rss[name] = bench_http.rss_mb(servers[name]["pid"])
            for _ in range(rounds):
                for name, port in ports.items():
                    result = bench_http.load(
                        port, 1, 64, requests, time_limit, request=requests_of[name]
                    )
                    loads[name].append(result)
    summary = {
        str(name): {
            "requests_per_s": spread([r["requests_per_s"] for r in runs]),
            "p99_ms": spread([r["p99_ms"] for r in runs]),
            "failed": sum(r["failed"] for r in runs),
        }
        for name, runs in loads.items()
    }
    return {"machine": machine(), "load": summary, "rss_mb": {str(k): v for k, v in rss.items()}}


def table(result: dict) -> str:
    load, rss = result["load"], result["rss_mb"]
    alone = load["alone"]["requests_per_s"]["median"]
    lines = [
        "| served | req/s at 64 clients x 1 row (median, min-max) | vs alone | p99 ms | non-2xx "
        "| RSS after warm-up, MB |",
        "|---|---|---|---|---|---|",
    ]
    names = {"alone": "one model alone (--model)"}
    names |= {str(c): f"{c} model{'s' if c > 1 else ''} of a repository" for c in SPREADS}
    for key, what in names.items():
        r = load[key]["requests_per_s"]
        lines.append(
            f"| {what} | {r['median']:,.0f} ({r['min']:,.0f}-{r['max']:,.0f}) | "
            f"{r['median'] / alone:.0%} | {load[key]['p99_ms']['median']:.1f} | "
            f"{load[key]['failed']} | {rss[key]:.0f} |"
        )
    extra = (rss["4"] - rss["1"]) / 3
    lines.append(f"\nResident memory per extra loaded model: {extra:.0f} MB (4 models vs 1).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="repeats of every load run")
    parser.add_argument("--requests", type=int, default=3000, help="requests per run")
    parser.add_argument("--time-limit", type=float, default=15.0, help="seconds per run")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    text = table(run(args.rounds, args.requests, args.time_limit))
    print(text)
    (RESULTS / "many-models.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
