"""Small statistics helpers shared by the scenarios."""

import statistics


def latency_summary(samples_s: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds of latencies given in seconds."""
    ms = sorted(s * 1000.0 for s in samples_s)
    if len(ms) == 1:
        only = ms[0]
        return {"p50_ms": only, "p95_ms": only, "p99_ms": only, "mean_ms": only, "max_ms": only}
    # "inclusive" interpolates between observed samples, so p99 of 200 samples is not just the max.
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50_ms": cuts[49],
        "p95_ms": cuts[94],
        "p99_ms": cuts[98],
        "mean_ms": statistics.fmean(ms),
        "max_ms": ms[-1],
    }
