"""/metrics text: what a bundle's files name cannot forge a sample."""

from __future__ import annotations

from fusedinf_cc.runtime.loader import BundleCache
from fusedinf_cc.serve.metrics import Metrics


def test_a_model_name_with_a_quote_and_a_line_break_stays_one_label():
    metrics = Metrics()
    hostile = 'x",outcome="success"} 1000\nfusedinf_budget_bytes 1'
    metrics.observe(hostile, "success", 0.25)
    text = metrics.text(BundleCache(1 << 20))
    samples = [line for line in text.splitlines() if line.startswith("fusedinf_requests_total")]
    assert samples == [
        'fusedinf_requests_total{model="x\\",outcome=\\"success\\"} 1000\\n'
        'fusedinf_budget_bytes 1",outcome="success"} 1'
    ]
    assert [line for line in text.splitlines() if line.startswith("fusedinf_budget_bytes ")] == [
        f"fusedinf_budget_bytes {1 << 20}"
    ]
