"""Runtimes: open an artifact as a `Session` and run it (`sessions.open_session`, the one place
that does), on ONNX Runtime (with the process's weight pool, `weight_pool`) or TensorRT.

Imports numpy and, when a session opens, the runtime; never onnx or onnx-ir, so a serving
process does not carry the compiler. Builds live in `compiler/targets`.
"""
