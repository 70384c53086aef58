"""The backend contract, over every backend and the options that change how it runs."""

import numpy as np
import onnx
import pytest

from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import with_uint8_input
from edgemlic.images import preprocess, preprocess_batch
from edgemlic.runtime import TorchOptions, load_backend
from edgemlic.runtime.loader import parse_onnx_variant

BACKENDS = [
    pytest.param(("checkpoint", "eager"), id="pytorch"),
    pytest.param(("checkpoint", "channels-last"), id="pytorch-channels-last"),
    pytest.param(("checkpoint", "compile"), id="pytorch-compile"),
    pytest.param(("fp32", None), id="onnxruntime-fp32"),
    pytest.param(("fp16", None), id="onnxruntime-fp16"),
    pytest.param(("int8", None), id="onnxruntime-int8"),
    pytest.param(("int8-cpu", None), id="onnxruntime-int8-cpu"),
    pytest.param(("openvino", "fp32"), id="openvino-fp32"),
    pytest.param(("openvino", "int8-cpu"), id="openvino-int8-cpu"),
    pytest.param(("openvino+throughput", "int8"), id="openvino-throughput-int8"),
    pytest.param(("uint8", "fp32"), id="onnxruntime-uint8-fp32"),
    pytest.param(("uint8:openvino", "int8-cpu"), id="openvino-uint8-int8-cpu"),
    pytest.param(("engine", None), id="tensorrt-fp16", marks=pytest.mark.tensorrt),
]
"""Every backend, with the options that change how it runs; the contract below holds for each."""


@pytest.fixture(scope="module")
def frames(exported, tmp_path_factory):
    """uint8-input versions of two exported graphs, made as `edgemlic export --input uint8` makes them."""
    out = tmp_path_factory.mktemp("frames")
    paths = {}
    for name in ("fp32", "int8-cpu"):
        paths[name] = out / exported[name].name.replace(".onnx", ".uint8-input.onnx")
        onnx.save(with_uint8_input(onnx.load(str(exported[name]))), str(paths[name]))
    return paths


@pytest.fixture(params=BACKENDS)
def backend(request, tiny_checkpoint, exported, frames, tmp_path):
    kind, options = request.param
    if kind.startswith("uint8"):
        variant = parse_onnx_variant(kind.partition(":")[2]) if ":" in kind else None
        with load_backend(frames[options], "cpu", options=variant) as b:
            yield b
    elif kind == "checkpoint":
        with load_backend(tiny_checkpoint, "cpu", options=TorchOptions.parse(options)) as b:
            yield b
    elif kind.startswith("openvino"):
        with load_backend(exported[options], "cpu", options=parse_onnx_variant(kind)) as b:
            yield b
    elif kind == "engine":
        from edgemlic.export.tensorrt import build_engine

        engine = build_engine(exported["fp16"], tmp_path / "model.fp16.engine").engine
        with load_backend(engine) as b:
            yield b
    else:
        with load_backend(exported[kind], "cpu") as b:
            yield b


def test_backend_contract(backend, val_images):
    pre = backend.card.preprocessing
    batch = np.stack([preprocess(p, pre) for p in val_images[:3]])
    out = backend.infer(batch)
    assert out.shape == (3, backend.card.num_classes) and out.dtype == np.float32
    assert np.all((out >= 0) & (out <= 1))
    np.testing.assert_allclose(backend.infer(batch[1:2]), out[1:2], atol=1e-5)  # batch-independent
    assert backend.name in ("pytorch", "onnxruntime", "openvino", "tensorrt") and backend.precision in (
        "fp32",
        "fp16",
        "int8",
    )
    assert backend.device == "cpu" or backend.name == "tensorrt"
    assert backend.min_batch >= 1 and (backend.max_batch is None or backend.max_batch >= backend.min_batch)
    backend.synchronize()  # declared by every backend: timing calls it without probing
    for bad in (batch[:0], batch[:, :, :-1], batch[0]):
        with pytest.raises(EdgemlicError, match="shape"):
            backend.infer(bad)
    backend.close()
    with pytest.raises(EdgemlicError, match="is closed; open"):
        backend.infer(batch)
    backend.close()  # twice is harmless (the fixture closes it again)


def _edited_graph(source, path, edit):
    """A copy of an exported graph, card kept, after `edit(model)`."""
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(path))
    return path


def _fix_batch(rows: int):
    def edit(model):
        for value in (model.graph.input[0], model.graph.output[0]):
            value.type.tensor_type.shape.dim[0].dim_value = rows
        del model.graph.value_info[:]  # shapes inferred for any batch; ONNX Runtime infers them again

    return edit


def _add_logits_output(model):
    (last,) = [node for node in model.graph.node if model.graph.output[0].name in node.output]
    model.graph.output.append(onnx.helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, None))


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_a_graph_with_a_fixed_batch_runs_any_batch(kind, exported, val_images, tmp_path):
    fixed = _edited_graph(exported["fp32"], tmp_path / "fixed.onnx", _fix_batch(2))
    options = parse_onnx_variant(kind)
    with (
        load_backend(fixed, "cpu", options=options) as b,
        load_backend(exported["fp32"], "cpu", options=options) as free,
    ):
        assert (b.min_batch, b.max_batch) == (2, 2) and (free.min_batch, free.max_batch) == (1, None)
        batch = np.stack([preprocess(p, b.card.preprocessing) for p in val_images[:5]])
        for rows in (1, 2, 5):  # padded up, exact, split into 2 + 2 + 1 padded
            np.testing.assert_allclose(b.infer(batch[:rows]), free.infer(batch[:rows]), atol=1e-5)


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_a_graph_with_two_outputs_is_refused_at_open(kind, exported, tmp_path):
    two = _edited_graph(exported["fp32"], tmp_path / "two.onnx", _add_logits_output)
    with pytest.raises(EdgemlicError, match="one image input and one probability output, found 1 and 2"):
        load_backend(two, "cpu", options=parse_onnx_variant(kind))


@pytest.mark.parametrize("backend_name", ["onnxruntime", "openvino"])
def test_input_dtype_and_layout_are_the_cards(exported, frames, val_images, backend_name):
    """Pixels for a float graph or floats for a uint8 graph are refused, never converted silently."""
    variant = parse_onnx_variant(backend_name)
    with load_backend(frames["fp32"], "cpu", options=variant) as backend:
        pixels = preprocess_batch(val_images[:2], backend.card.preprocessing)
        assert pixels.shape == (2, 32, 32, 3) and backend.infer(pixels).shape == (2, backend.card.num_classes)
        with pytest.raises(
            EdgemlicError, match="takes uint8 NHWC pixels and normalizes them itself, got float32"
        ):
            backend.infer(pixels.astype(np.float32))
    with load_backend(exported["fp32"], "cpu", options=variant) as backend:
        with pytest.raises(EdgemlicError, match="takes normalized float32 NCHW input, got uint8"):
            backend.infer(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))
        with pytest.raises(EdgemlicError, match=r"shape N x 3 x 32 x 32 with N >= 1, got \(2, 32, 32, 3\)"):
            backend.infer(pixels.astype(np.float32))


@pytest.mark.parametrize("backend_name", ["onnxruntime", "openvino"])
def test_a_card_that_lies_about_the_input_dtype_is_refused(exported, tmp_path, backend_name):
    """A graph taking uint8 N x 3 x S x S (a Cast in front) under the float graph's card: only the dtype
    disagrees with the card."""
    model = onnx.load(str(exported["fp32"]))
    for node in model.graph.node:
        node.input[:] = ["images_float" if name == "images" else name for name in node.input]
    model.graph.node.insert(
        0, onnx.helper.make_node("Cast", ["images"], ["images_float"], to=onnx.TensorProto.FLOAT)
    )
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    liar = tmp_path / "liar.onnx"
    onnx.save(model, str(liar))
    with pytest.raises(EdgemlicError, match="the graph's input is uint8, its card says float32"):
        load_backend(liar, "cpu", options=parse_onnx_variant(backend_name))
