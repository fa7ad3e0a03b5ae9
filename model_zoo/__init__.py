"""Torch architectures exported to ONNX for tests, the demo and benchmarks (not part of the wheel).

python -m model_zoo export resnet18 heads -o models/
"""
