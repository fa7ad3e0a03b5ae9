"""What `serve` counts for /metrics (Prometheus text): requests by model and outcome, the
seconds successful ones took, and the loader's own stats, read when scraped."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fusedinf_cc.runtime.loader import BundleCache


@dataclass
class Metrics:
    """Counters for /metrics; the loader's own stats are read when scraped."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, model: str, outcome: str, seconds: float) -> None:
        with self.lock:
            key = (model, outcome)
            self.requests[key] = self.requests.get(key, 0) + 1
            if outcome == "success":
                self.seconds[model] = self.seconds.get(model, 0.0) + seconds

    def text(self, cache: BundleCache) -> str:
        """Prometheus text: these counters, and the loader's own stats read now."""
        stats = cache.stats
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        with self.lock:
            requests = sorted(self.requests.items())
            seconds = sorted(self.seconds.items())
        metric(
            "fusedinf_requests_total",
            "counter",
            "Inference requests by model and outcome.",
            [(f'{{model="{_label(m)}",outcome="{_label(o)}"}}', n) for (m, o), n in requests],
        )
        metric(
            "fusedinf_request_seconds_total",
            "counter",
            "Seconds spent on successful requests (swaps included), by model.",
            [(f'{{model="{_label(m)}"}}', s) for m, s in seconds],
        )
        metric("fusedinf_loads_total", "counter", "Bundle loads (misses).", [("", stats.misses)])
        metric("fusedinf_evictions_total", "counter", "Bundles evicted.", [("", stats.evictions)])
        metric(
            "fusedinf_loading_seconds_total",
            "counter",
            "Seconds spent loading bundles.",
            [("", stats.seconds_loading)],
        )
        metric(
            "fusedinf_resident_bytes",
            "gauge",
            "Footprint of the resident bundles.",
            [("", cache.accounted_bytes)],
        )
        metric(
            "fusedinf_peak_resident_bytes",
            "gauge",
            "Highest footprint accounted so far.",
            [("", stats.peak_accounted_bytes)],
        )
        metric("fusedinf_budget_bytes", "gauge", "The memory budget.", [("", cache.budget_bytes)])
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A label value as the Prometheus text format escapes it: a name read from a bundle's
    files can hold a quote or a line break, which must not end the label or the sample."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Exact for counts and bytes, full precision for seconds."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
