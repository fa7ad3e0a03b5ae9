"""TensorRT's ONNX parser errors, each naming its node, operator and reason."""

from __future__ import annotations

from dataclasses import dataclass

from fusedinf_cc.backends.tensorrt.parser_errors import ParserIssue, parser_error


# parser errors ----------------------------------------------------------------------------------
@dataclass
class RecordedParserError:
    """The fields of a tensorrt.IParserError, as TensorRT reports them (methods, not attributes)."""

    index: int
    name: str
    op: str
    text: str

    def node(self) -> int:
        return self.index

    def node_name(self) -> str:
        return self.name

    def node_operator(self) -> str:
        return self.op

    def desc(self) -> str:
        return self.text


def test_parser_errors_name_each_node_op_and_reason():
    issues = [
        ParserIssue.from_parser_error(RecordedParserError(i, f"cls/n{i}", "Unique", "no importer"))
        for i in range(7)
    ]
    message = str(parser_error("fused.onnx", issues))
    assert message.startswith(
        "TensorRT's ONNX parser rejected fused.onnx: node 0 'cls/n0' (Unique)"
    )
    assert "no importer" in message and "and 2 more" in message and "\n" not in message
    whole_model = ParserIssue.from_parser_error(RecordedParserError(-1, "", "", "bad protobuf"))
    assert whole_model.describe() == "bad protobuf"
