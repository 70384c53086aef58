"""The few fields of an ONNX file that an engine build reads, decoded without the onnx package.

On JetPack 6 the onnx package cannot be installed beside NVIDIA's numpy-1 wheels (onnx needs ml_dtypes,
which needs numpy 2), and TensorRT's own parser reads the graph anyway. An ONNX file is one serialized
`ModelProto` (protobuf, onnx/onnx.proto), so the model card, the graph's inputs and outputs, the
initializers' element types and each node's type and integer attributes are decoded here from the
protobuf wire format (protobuf.dev/programming-guides/encoding); every other field, weights included,
is skipped without being copied. The tests check the result against the onnx package on exported graphs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# Field numbers from onnx/onnx.proto.
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTRIBUTE_NAME, _ATTRIBUTE_INT = 1, 3
_TENSOR_DATA_TYPE, _TENSOR_NAME = 2, 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR = 1
_TENSOR_TYPE_ELEM, _TENSOR_TYPE_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE = 1

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class ValueInfo:
    """A graph input, output or intermediate value: its name, element type and shape."""

    name: str
    elem_type: int  # onnx.TensorProto.DataType; 0 when the value is not a tensor or has no type
    shape: tuple[int | None, ...]  # None where the dimension is symbolic or unknown


@dataclass(frozen=True)
class Node:
    op_type: str
    domain: str
    int_attributes: dict[str, int]  # the attributes that carry an integer (Cast's "to", ...)


@dataclass(frozen=True)
class ModelFacts:
    metadata: dict[str, str]
    inputs: tuple[ValueInfo, ...]  # as the graph lists them, initializers included if listed
    outputs: tuple[ValueInfo, ...]
    value_info: tuple[ValueInfo, ...]
    initializer_types: dict[str, int]  # initializer name -> onnx.TensorProto.DataType
    nodes: tuple[Node, ...]


def parse_model(data: bytes) -> ModelFacts:
    """The facts of a serialized ModelProto; ValueError when `data` is not one."""
    try:
        model = _fields_by_number(memoryview(data))
        if _MODEL_GRAPH not in model:
            raise ValueError("no graph")
        graph = _fields_by_number(_message(model, _MODEL_GRAPH))
        return ModelFacts(
            metadata=dict(_entry(m) for m in _messages(model, _MODEL_METADATA)),
            inputs=tuple(_value_info(v) for v in _messages(graph, _GRAPH_INPUT)),
            outputs=tuple(_value_info(v) for v in _messages(graph, _GRAPH_OUTPUT)),
            value_info=tuple(_value_info(v) for v in _messages(graph, _GRAPH_VALUE_INFO)),
            initializer_types=dict(_initializer(t) for t in _messages(graph, _GRAPH_INITIALIZER)),
            nodes=tuple(_node(n) for n in _messages(graph, _GRAPH_NODE)),
        )
    except (IndexError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed protobuf ({type(e).__name__})") from None


def _entry(message: memoryview) -> tuple[str, str]:
    fields = _fields_by_number(message)
    return _string(fields, _ENTRY_KEY), _string(fields, _ENTRY_VALUE)


def _value_info(message: memoryview) -> ValueInfo:
    fields = _fields_by_number(message)
    elem_type, shape = 0, ()
    if _VALUE_TYPE in fields:
        type_proto = _fields_by_number(_message(fields, _VALUE_TYPE))
        if _TYPE_TENSOR in type_proto:
            tensor = _fields_by_number(_message(type_proto, _TYPE_TENSOR))
            elem_type = _int(tensor, _TENSOR_TYPE_ELEM)
            if _TENSOR_TYPE_SHAPE in tensor:
                dims = _messages(_fields_by_number(_message(tensor, _TENSOR_TYPE_SHAPE)), _SHAPE_DIM)
                shape = tuple(_dimension(d) for d in dims)
    return ValueInfo(_string(fields, _VALUE_NAME), elem_type, shape)


def _dimension(message: memoryview) -> int | None:
    fields = _fields_by_number(message)
    return _int(fields, _DIM_VALUE) if _DIM_VALUE in fields else None


def _initializer(message: memoryview) -> tuple[str, int]:
    fields = _fields_by_number(message)
    return _string(fields, _TENSOR_NAME), _int(fields, _TENSOR_DATA_TYPE)


def _node(message: memoryview) -> Node:
    fields = _fields_by_number(message)
    attributes = {}
    for attribute in _messages(fields, _NODE_ATTRIBUTE):
        attribute_fields = _fields_by_number(attribute)
        if _ATTRIBUTE_INT in attribute_fields:
            attributes[_string(attribute_fields, _ATTRIBUTE_NAME)] = _int(attribute_fields, _ATTRIBUTE_INT)
    return Node(_string(fields, _NODE_OP_TYPE), _string(fields, _NODE_DOMAIN), attributes)


# ---- the wire format -------------------------------------------------------------------------------


def _fields_by_number(message: memoryview) -> dict[int, list[int | memoryview]]:
    """Every value of each field, in order: varints as ints, length-delimited fields as views."""
    fields: dict[int, list[int | memoryview]] = {}
    for number, value in _fields(message):
        fields.setdefault(number, []).append(value)
    return fields


def _fields(message: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    position, end = 0, len(message)
    while position < end:
        key, position = _varint(message, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == _VARINT:
            value, position = _varint(message, position)
        elif wire_type == _LENGTH_DELIMITED:
            size, position = _varint(message, position)
            value, position = message[position : position + size], position + size
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            value, position = message[position : position + size], position + size
        else:
            raise ValueError(f"wire type {wire_type}")  # 3 and 4 are proto1 groups, not in ONNX
        if position > end:
            raise ValueError("truncated field")
        yield number, value


def _varint(message: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = message[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _message(fields: dict, number: int) -> memoryview:
    """A singular embedded message; protobuf merges repeats of one, as parsing their concatenation does."""
    parts = _messages(fields, number)
    return parts[0] if len(parts) == 1 else memoryview(b"".join(parts))


def _messages(fields: dict, number: int) -> list[memoryview]:
    values = fields.get(number, [])
    if not all(isinstance(v, memoryview) for v in values):
        raise ValueError(f"field {number} is not length-delimited")
    return values


def _string(fields: dict, number: int) -> str:
    values = _messages(fields, number)
    return str(values[-1], "utf-8") if values else ""


def _int(fields: dict, number: int) -> int:
    """The last value of an int32/int64 field (negative ones are ten-byte two's complement)."""
    values = fields.get(number, [0])
    if not isinstance(values[-1], int):
        raise ValueError(f"field {number} is not a varint")
    return values[-1] - (1 << 64) if values[-1] >= 1 << 63 else values[-1]
