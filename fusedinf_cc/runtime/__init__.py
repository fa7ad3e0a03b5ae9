"""The runtime: `loader.BundleCache` swaps bundles (`bundle`) in and out under a memory budget,
counted in one `ledger` and parsed from one `budget`; eviction `policies`; footprints measured
in a fresh process (`footprint`, `worker`); feeds checked (`feeds`); process memory read and
handed back (`procmem`).

Imports `backends`, `artifacts` and `common`; never onnx, onnx-ir or the compiler, so a serving
process pays only for numpy and its runtime.
"""
