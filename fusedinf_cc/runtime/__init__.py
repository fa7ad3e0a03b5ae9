"""The runtime: `loader.EngineCache` swaps bundles in and out under a memory budget (`policies`),
with footprints measured in a fresh process (`footprint`, `worker`), feeds checked (`feeds`) and
process memory read and handed back (`procmem`).

Imports `backends`, `artifacts` and `common`; never onnx, onnx-ir or the compiler, so a serving
process pays only for numpy and its runtime.
"""
