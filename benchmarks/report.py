"""The serving table in Markdown, with the issue's targets as ratios measured in the same run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.load import LOADGEN_CPU_LIMIT

# (what, numerator row, denominator row, concurrencies, target ratio)
RATIOS: list[tuple[str, str, str, tuple[str, ...], float]] = [
    ("Esteira handler / stock handler, batch 8", "ts-esteira-b8", "ts-stock-b8", ("1", "8", "32"), 0.95),
    ("Esteira handler / stock handler, batch 1", "ts-esteira-b1", "ts-stock-b1", ("1", "8", "32"), 0.95),
    ("... inference log off / stock, batch 8", "ts-esteira-b8-nolog", "ts-stock-b8", ("1", "8", "32"), 0.95),
    ("... inference log off / stock, batch 1", "ts-esteira-b1-nolog", "ts-stock-b1", ("1", "8", "32"), 0.95),
    ("Esteira / stock handler, image, batch 8", "ts-esteira-image-b8", "ts-stock-image-b8", ("1", "8", "32"), 0.95),
    ("Esteira / stock handler, image, batch 1", "ts-esteira-image-b1", "ts-stock-image-b1", ("1", "8", "32"), 0.95),
    ("router joining / TorchServe b8 alone", "router-joining+ts-esteira", "ts-esteira-b8", ("1", "8", "32"), 0.9),
    (
        "router joining / the pod's front joining",
        "router-joining+ts-esteira",
        "front-joining+ts-esteira",
        ("1", "8", "32"),
        0.9,
    ),
    ("pod's front / TorchServe behind it", "front+ts-esteira-b8", "ts-esteira-b8", ("1", "8", "32"), 0.9),
    ("pod's front joining / TorchServe b8 alone", "front-joining+ts-esteira", "ts-esteira-b8", ("1", "8", "32"), 0.9),
    ("router / esteira-kserve behind it", "router+esteira-kserve", "esteira-kserve", ("1", "8", "32"), 0.9),
    ("router / bare HTTP server behind it", "router+http-ceiling", "http-ceiling", ("1", "8", "32"), 0.9),
    ("esteira up's JVM flags / C1-only quick start", "ts-esteira-b8", "ts-esteira-b8-quick-jvm", ("1", "8", "32"), 1.0),
    ("esteira-kserve / TorchServe + Esteira b8", "esteira-kserve", "ts-esteira-b8", ("32",), 2.0),
    ("esteira-kserve, 2 workers / TorchServe + Esteira b8", "esteira-kserve-w2", "ts-esteira-b8", ("32",), 2.0),
    ("... / TorchServe + Esteira b8, 2 workers", "esteira-kserve-w2", "ts-esteira-b8-w2", ("32",), 2.0),
    ("esteira-kserve / bare HTTP server", "esteira-kserve", "http-ceiling", ("1",), 0.5),
    ("esteira-kserve, idle poll / bare HTTP server", "esteira-kserve-poll", "http-ceiling", ("1",), 0.5),
    ("esteira-kserve / KServe stock model", "esteira-kserve", "kserve-stock", ("1", "8", "32"), 1.0),
    ("esteira-kserve, `optimize` / as loaded", "esteira-kserve-optimized", "esteira-kserve", ("1", "8", "32"), 1.0),
]


# In-process figures in pairs of rows (batches of 1 and 8): (results key, row names and what each is, title).
IN_PROCESS_PAIRS: list[tuple[str, dict[str, str], str]] = [
    (
        "in_process_image",
        {"stock": "the stock image handler's methods", "esteira": "Esteira's handler"},
        "in-process, digits image: {}, batches of 1 (first column) and 8 (second); one thread",
    ),
    (
        "in_process_optimize",
        {"as_loaded": "as loaded", "optimized": "`optimize` on"},
        "in-process: Esteira's handler, {}, in alternating rounds, batches of 1 and 8; one thread",
    ),
]


def ratio(rows: dict[str, Any], numerator: str, denominator: str, concurrency: str) -> float | None:
    """``numerator``'s req/s over ``denominator``'s at one concurrency. Rows of one group ran in alternation, run i
    of each in the same round: the median of the rounds' ratios, so a swing of the host's speed between rounds
    cancels out. Otherwise the ratio of the medians."""
    top, bottom = rows.get(numerator, {}), rows.get(denominator, {})
    above, below = top.get("points", {}).get(concurrency), bottom.get("points", {}).get(concurrency)
    if above is None or below is None:
        return None
    runs, under = above.get("runs_rps", []), below.get("runs_rps", [])
    alternated = top.get("group") is not None and top.get("group") == bottom.get("group")
    if alternated and runs and len(runs) == len(under) and all(under):
        return statistics.median(a / b for a, b in zip(runs, under, strict=True))
    return float(above["rps"]) / float(below["rps"]) if below["rps"] else None


def _features(results: dict[str, Any]) -> list[str]:
    """What Esteira's TorchServe rows ran with, and the proof that inference logging was on."""
    log = results.get("inference_log")
    if not log:
        return []
    return [
        "Esteira's handlers (under TorchServe and esteira-kserve) run with every feature on: validation, metrics, "
        "drift counting against the reference profile and inference logging (mode all, sample rate "
        f"{log['sample_rate']}) to a local stand-in for the collector, which received {log['posts']:,} batches "
        f'({log["bytes"] / 2**20:,.1f} MiB) of records; {_dropped(log)}. The rows marked "inference log off" run '
        "without that one feature, to show what the rest of the handler costs. "
        "Each TorchServe serves the one model its rows call, as a predictor pod does.",
        "",
    ]


def _lone_request(results: dict[str, Any]) -> list[str]:
    """Why one caller gets less than the handler's in-process rate promises."""
    handler = results.get("in_process_handler", {})
    if "after_idle_us" not in handler:
        return []
    return [
        "",
        f"One request through Esteira's handler in-process took {handler['back_to_back_us']:.0f} us (median) back to "
        f"back and {handler['after_idle_us']:.0f} us after {handler['idle_ms']:g} ms idle, as a lone caller's server "
        "is between requests: the same code, started cold (caches refilled by other work, a core just woken).",
        *_between_other_work(handler),
    ]


def _in_process_row(title: str, rates: list[float], concurrencies: list[str]) -> str:
    """A table row for an in-process figure: its rates in the first columns, the load columns left empty."""
    cells = [f"{rate:,.0f}" for rate in rates] + ["" for _ in concurrencies[len(rates) :]]
    return f"| {title} | " + " | ".join(cells) + " | | | | | |"


def _optimized(results: dict[str, Any], rows: dict[str, Any]) -> list[str]:
    """What ``"optimize": true`` decided for each model, and a forward pass's time as loaded and optimized; what
    the served rows' handlers decided at load."""
    served = [
        f"`{key}`'s handler at load: the model {row['optimize']}." for key, row in rows.items() if "optimize" in row
    ]
    models = results.get("in_process_optimize", {}).get("models")
    if not models:
        return ["", *served] if served else []
    titles = {"cnn": "a five-convolution CNN with batch norm on 64x64 images"}
    figures = [
        f"{titles.get(name, name)} {'kept' if model['kept'] else 'not kept'} ("
        + ", ".join(f"{size}: {us[0]:g} -> {us[1]:g}" for size, us in model["forward_us"].items())
        + ")"
        for name, model in models.items()
    ]
    return [
        "",
        "`optimize` (`esteira-model.json`): the load-time check's verdict per model, with a forward pass's "
        "microseconds as loaded -> optimized for 1 and 8 instances: " + "; ".join(figures) + ".",
        *served,
    ]


def _batch_pairs(figures: dict[str, Any], names: dict[str, str], title: str, concurrencies: list[str]) -> list[str]:
    """A row per name of ``figures``: its rates in batches of 1 and 8 (``<name>_batch_<n>_rps``)."""
    return [
        _in_process_row(
            title.format(what), [figures[f"{name}_batch_1_rps"], figures[f"{name}_batch_8_rps"]], concurrencies
        )
        for name, what in names.items()
    ]


def _batch_sizes(rows: dict[str, Any], concurrencies: list[str]) -> list[str]:
    """How many requests esteira-kserve's batcher put together, where the row's server said (its
    ``esteira_batch_size`` histogram, read before and after the median run)."""
    sized = [(key, row) for key, row in rows.items() if any("mean_batch" in point for point in row["points"].values())]
    if not sized:
        return []
    at = " / ".join(concurrencies)
    figures = [
        f"`{key}` " + " / ".join(f"{row['points'].get(c, {}).get('mean_batch', '-')}" for c in concurrencies)
        for key, row in sized
    ]
    return [
        "",
        f"Requests per batch in esteira-kserve's median run at {at} callers (`mean_batch` in the JSON): "
        + "; ".join(figures)
        + ".",
    ]


def _between_other_work(handler: dict[str, Any]) -> list[str]:
    if "batch_8_after_other_work_us" not in handler:
        return []
    return [
        f"In batches of 8 it took {1e6 / handler['batch_8_rps']:.0f} us a request back to back and "
        f"{handler['batch_8_after_other_work_us']:.0f} us when {handler['other_work_us']:.0f} us of other Python "
        "work (JSON-encoding a document) ran before each batch, as a server's HTTP runs between its batches: "
        "the same code, its caches refilled by the other work.",
    ]


def _dropped(log: dict[str, Any]) -> str:
    dropped = log.get("dropped")
    if dropped is None:
        return "records the servers dropped were not counted"
    if dropped == 0:
        return "the servers dropped none (`esteira_inference_log_dropped_total`)"
    return f"**the servers dropped {dropped:,} records** (a full queue): those rows logged less than every request"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    rows: dict[str, Any] = results["rows"]
    # A run of the in-process phase alone has no load rows: its two-column rows still get the table's columns.
    concurrencies = sorted({c for row in rows.values() for c in row["points"]}, key=int) or ["1", "8", "32"]
    top = concurrencies[-1]
    machine = results["machine"]
    lines = [
        "# Serving benchmark",
        "",
        f"Written by `make bench` (`python -m benchmarks.serving`). Machine: {machine['cpu']}, "
        f"{machine['cores_usable']} usable cores, {machine['memory_gib']} GiB, GPU: {machine['gpu']}, "
        f"Python {machine['python']}, torch {machine['torch']}, {machine['wrk']}; load average at start "
        f"{machine['load_average_at_start']}. Each row first warms its server at c={top} until throughput stops "
        f"rising, a TorchServe for at least {results.get('jvm_warm_up_floor_seconds', 0):g} s (its JIT compiler "
        "takes that long; `warm_up_seconds` in the JSON). "
        "Rows run in groups (`group` in the JSON): a group's servers are all up at once, and its rows' runs "
        "alternate, round by round, at each concurrency. "
        "Each point: one-instance requests from wrk (one thread, c connections) "
        f"for {results['seconds_per_point']} s, median of {results['repeats']} runs "
        f"({results['repeats'] + results.get('lone_extra_repeats', 0)} at c=1); p99 and CPU belong to the median "
        f"run. `wrk cores`: the load generator's own CPU (flagged `!` above {LOADGEN_CPU_LIMIT}); `server us/req`: "
        "the server's CPU (all its processes; a pod's front with its TorchServe, a router alone) per request.",
        "",
        *_features(results),
        "| what | "
        + " | ".join(f"c={c} req/s" for c in concurrencies)
        + f" | p50 ms c={top} | p99 ms c={top} | server us/req c={top} | wrk cores (max) | errors |",
        "| --- | " + " | ".join("---" for _ in concurrencies) + " | --- | --- | --- | --- | --- |",
    ]
    if "in_process" in results:
        lines.append(
            _in_process_row(
                "in-process: JSON parse, tensor, forward, softmax, JSON dump; one thread",
                [results["in_process"]["rps"]],
                concurrencies,
            )
        )
    if "in_process_handler" in results and len(concurrencies) > 1:
        handler = results["in_process_handler"]
        lines.append(
            _in_process_row(
                "in-process: Esteira's handler (`InProcessHandler.run`), batches of 1 (first column) and 8 (second); "
                "one thread",
                [handler["batch_1_rps"], handler["batch_8_rps"]],
                concurrencies,
            )
        )
        if "v2_batch_1_rps" in handler:
            lines.append(
                _in_process_row(
                    "in-process: Esteira's handler, the same request in Open Inference Protocol v2, batches of 1 and 8; "
                    "one thread",
                    [handler["v2_batch_1_rps"], handler["v2_batch_8_rps"]],
                    concurrencies,
                )
            )
    for key, names, title in IN_PROCESS_PAIRS:
        if key in results and len(concurrencies) > 1:
            lines += _batch_pairs(results[key], names, title, concurrencies)
    for key, row in rows.items():
        points = row["points"]
        cells = [f"{points[c]['rps']:,.0f}" if c in points else "" for c in concurrencies]
        last = points.get(top, {})
        wrk = max(point["loadgen_cores"] for point in points.values())
        flag = " !" if wrk > LOADGEN_CPU_LIMIT else ""
        errors = sum(point["errors"] for point in points.values())
        lines.append(
            f"| {row['title']} (`{key}`) | "
            + " | ".join(cells)
            + f" | {last.get('p50_ms', '')} | {last.get('p99_ms', '')} | {last.get('server_cpu_us_per_request', '')}"
            f" | {wrk:.2f}{flag} | {errors} |"
        )
    lines += _lone_request(results)
    lines += _optimized(results, rows)
    lines += _batch_sizes(rows, concurrencies)
    lines += [
        "",
        "## Targets, as ratios of req/s in this run",
        "",
        "Both rows of a ratio ran in one group, their points alternating: each ratio is the median of the ratios of "
        "runs taken in the same round (`runs_rps` in the JSON).",
        "",
        "| ratio | target | " + " | ".join(f"c={c}" for c in concurrencies) + " |",
        "| --- | --- | " + " | ".join("---" for _ in concurrencies) + " |",
    ]
    for what, numerator, denominator, at, target in RATIOS:
        cells = []
        for concurrency in concurrencies:
            value = ratio(rows, numerator, denominator, concurrency) if concurrency in at else None
            cells.append("" if value is None else f"{value:.2f} {'ok' if value >= target else 'MISS'}")
        if any(cells):
            lines.append(f"| {what} | >= {target} | " + " | ".join(cells) + " |")
    lines.append("")
    path.write_text("\n".join(lines))
