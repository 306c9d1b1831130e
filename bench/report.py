"""The comparison table. Every ratio is oriented so that > 1 means Aiki is better.

When the push model ran (system ``aiki-push``), two more columns: its figure and ``push/pull``,
push against Aiki's pull worker from the same invocation (> 1 means push is better).
"""

from typing import Any

from bench.scenarios import SCENARIOS, Metric

Result = dict[str, Any]
HEADERS = ("scenario", "metric", "aiki", "dbos", "ratio")
PUSH_HEADERS = ("aiki push", "push/pull")


def _cell(result: Result | None, metric: Metric) -> str:
    if result is None:
        return "-"
    if not result["ok"]:
        return "unavailable" if result.get("unavailable") else "error"
    value = result["metrics"].get(metric.key)
    return "-" if value is None else f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


def _ratio(aiki: Result | None, dbos: Result | None, metric: Metric) -> str:
    if aiki is None or dbos is None or not aiki["ok"] or not dbos["ok"]:
        return "-"
    a, d = aiki["metrics"].get(metric.key), dbos["metrics"].get(metric.key)
    if not a or not d:
        return "-"
    # Throughput: aiki/dbos. Latency, memory: dbos/aiki. Either way > 1 means Aiki wins.
    return f"{(a / d if metric.higher_is_better else d / a):.2f}x"


def table(results: list[Result], runs_label: dict[str, str]) -> str:
    by_key = {(r["scenario"], r["system"]): r for r in results}
    with_push = any(r["system"] == "aiki-push" for r in results)
    headers = (*HEADERS, *PUSH_HEADERS) if with_push else HEADERS
    rows: list[tuple[str, ...]] = []
    for name in dict.fromkeys(r["scenario"] for r in results):
        aiki, dbos = by_key.get((name, "aiki")), by_key.get((name, "dbos"))
        push = by_key.get((name, "aiki-push"))
        for i, metric in enumerate(SCENARIOS[name].metrics):
            label = f"{name} ({runs_label[name]})" if i == 0 else ""
            row: tuple[str, ...] = (
                label,
                metric.label,
                _cell(aiki, metric),
                _cell(dbos, metric),
                _ratio(aiki, dbos, metric),
            )
            if with_push:
                # push/pull: > 1 means push is better (the same orientation as aiki/dbos).
                row += (_cell(push, metric), _ratio(push, aiki, metric))
            rows.append(row)
    widths = [max(len(row[c]) for row in (headers, *rows)) for c in range(len(headers))]

    def line(row: tuple[str, ...]) -> str:
        # Text columns left-aligned, numbers right-aligned.
        return "  ".join(
            cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )

    out = [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    problems = [r for r in results if not r["ok"]]
    # One line per failed system/scenario, so "aiki unavailable: <error>" is visible below the table.
    seen: set[str] = set()
    for r in problems:
        message = r["error"] if r.get("unavailable") else f"{r['system']} {r['scenario']} failed: {r['error']}"
        if message not in seen:
            seen.add(message)
            out.append(message)
    return "\n".join(out)
