"""TensorRT: run engines (`runtime`, `device`), build them from an ONNX file (`builder`), and the
options, profiles and compatibility records both sides share.

Everything that needs `tensorrt` or a GPU imports them when called, never at import time, so
options, profiles and compatibility checks run anywhere.
"""
