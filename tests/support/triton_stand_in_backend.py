"""A stand-in for Triton's onnxruntime backend, for tests against a real tritonserver.

PyPI's tritonserver (in `nvidia-pytriton`) has only the python backend, so the tests install
this file as `backends/onnxruntime/model.py`: Triton then runs a model whose config says
`platform: "onnxruntime_onnx"` through it, and everything Triton itself does (parsing and
checking config.pbtxt, explicit load and unload, batch limits, requested outputs, the HTTP
protocol) is real. What it does not stand for: the real backend's own options (execution
providers, thread counts, graph optimisation levels) are not exercised. Like the real backend,
it refuses a config whose tensors are not the model's.
"""

import json
import os

import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(folder, config.get("default_model_filename") or "model.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [value.name for value in self.session.get_inputs()]
        self.outputs = [value.name for value in self.session.get_outputs()]
        for kind, declared, actual in (
            ("input", [t["name"] for t in config["input"]], self.inputs),
            ("output", [t["name"] for t in config["output"]], self.outputs),
        ):
            if sorted(declared) != sorted(actual):
                raise pb_utils.TritonModelException(
                    f"config {kind}s {sorted(declared)} are not the model's {sorted(actual)}"
                )

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {
                name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                for name in self.inputs
            }
            names = list(request.requested_output_names()) or self.outputs
            results = self.session.run(names, feeds)
            tensors = [
                pb_utils.Tensor(name, value) for name, value in zip(names, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
