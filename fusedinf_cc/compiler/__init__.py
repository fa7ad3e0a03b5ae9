"""The compiler: source models -> passes (`pipeline`) -> a build target (`targets`) -> an artifact
with its manifest (`build.build_fused` runs the whole flow); `inspection` summarises a model, and
`tensorrt_support` checks one against TensorRT's ONNX parser.

May import `passes`, `onnx_io`, `backends` (to optimise with ONNX Runtime or build an engine),
`artifacts` and `common`; never `runtime` or anything above it.
"""
