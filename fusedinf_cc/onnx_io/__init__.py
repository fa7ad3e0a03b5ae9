"""Reading and writing ONNX files: source models loaded with their external data memory-mapped,
and fused models written atomically (a single file streamed tensor by tensor).

The only place besides the passes that touches onnx-ir; imports `common`."""
