"""DeepStream export: an exported model as a Gst-nvinfer multilabel classifier, primary or secondary.

What nvinfer does and what is written for it follows NVIDIA's DeepStream documentation ("Gst-nvinfer":
the configuration table and the preprocessing formula) and the SDK's open sources of nvinfer
(gstnvinfer.cpp `get_converted_buffer` for the scaling, nvdsinfer_context_impl.cpp `parseLabelsFile`
for the labels file, nvdsinfer_context_impl_output_parsing.cpp `ClassifyPostprocessor` for the parser
contract). Nothing here needs DeepStream, TensorRT or a GPU; a DeepStream pipeline was not run here.

- nvinfer normalizes with one scale for all channels, `y = net-scale-factor * (x - offsets[c])`. With
  offsets[c] = 255 mean[c] and net-scale-factor = 1/255 the network sees (x/255 - mean[c]), and the
  first convolution's weights are divided by std[c] per input channel, so the folded graph computes
  what the original computes on ((x/255) - mean[c]) / std[c]. The convolution's zero padding stays
  exact: zero in either normalized domain is the same pixel value, 255 mean[c].
- nvinfer's built-in classifier parser keeps one class per output layer; the generated C++ parser
  reports every class at or above its own threshold from the card, the score as its confidence.
- nvinfer scales the whole frame (primary) or object box (secondary) to the network size; it cannot
  centre-crop. `nvinfer_pixels` simulates that scaling, so its cost can be measured against edgemlic's
  resize and centre crop (`measure_nvinfer_preprocessing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgemlic import __version__
from edgemlic.card import ModelCard
from edgemlic.compare import Comparison, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import Graph, graph_scores, load_graph, set_card, write_graph
from edgemlic.export.onnx_info import OnnxModelInfo, read_onnx_model
from edgemlic.images import ImageSource, as_rgb_image, preprocess_batch
from edgemlic.io import make_folder, write_text

PARSER_FUNCTION = "NvDsInferClassiferParseCustomEdgemlic"
PARSER_SOURCE = "nvdsinfer_parse_edgemlic.cpp"
PARSER_LIBRARY = "libnvdsinfer_parse_edgemlic.so"
STAND_IN_HEADERS = "stand_in"
"""Folder (in the package's deepstream_parser data) of the header the tests compile the parser with."""
MODES = {"primary": 1, "secondary": 2}
"""process-mode: 1 operates on whole frames, 2 on objects from an upstream detector."""
NETWORK_MODES = {"fp32": 0, "fp16": 2}
"""network-mode: the precision nvinfer builds its TensorRT engine in from the FP32 ONNX (1 is INT8,
which needs a calibration file this export does not write)."""
NET_SCALE_FACTOR = 1.0 / 255.0


@dataclass(frozen=True)
class NvinferScaling:
    """How nvinfer scales a frame or object to the network input (its [property] scaling keys).

    The default is the setting measured closest to the card's resize-and-centre-crop on real photos
    (README, "DeepStream"): the whole frame or box stretched to the network size, no padding, with
    GPU-Super (NvBufSurfTransformInter_Algo2 on the GPU), which averages the source area when it
    shrinks, as Pillow's bilinear resize (antialiased) does and nvinfer's plain bilinear does not.
    """

    maintain_aspect_ratio: bool = False
    symmetric_padding: bool = True
    """With maintain_aspect_ratio: pad both sides (centred) instead of right and bottom only."""
    scaling_filter: int = 3
    """NvBufSurfTransform_Inter: 0 nearest, 1 bilinear, 2 GPU-cubic/VIC-5-tap, 3 GPU-super/VIC-10-tap,
    4 GPU-Lanczos/VIC-smart."""
    scaling_compute_hw: int = 1
    """NvBufSurfTransform_Compute: 0 platform default (VIC on Jetson), 1 GPU, 2 VIC."""


@dataclass(frozen=True)
class ClassifierPlacement:
    """Where the classifier sits in the pipeline: whole frames, or objects of an upstream detector."""

    mode: str = "primary"
    gie_unique_id: int | None = None
    """Default 1 for a primary classifier, 2 for a secondary one (the detector is usually 1)."""
    operate_on_gie_id: int | None = None
    """Secondary only: the gie-unique-id of the detector whose objects are classified (default 1)."""
    operate_on_class_ids: tuple[int, ...] = ()
    """Secondary only: the detector's class ids to classify (empty: all)."""
    input_object_min_width: int | None = None
    input_object_min_height: int | None = None
    input_object_max_width: int | None = None
    input_object_max_height: int | None = None
    batch_size: int | None = None
    """Frames (primary) or objects (secondary) per inference; default 1 and 16."""
    precision: str = "fp16"
    gpu_id: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EdgemlicError(f"--mode {self.mode!r}: choose primary or secondary")
        if self.precision not in NETWORK_MODES:
            raise EdgemlicError(
                f"--precision {self.precision!r}: nvinfer builds fp32 or fp16 engines from this export"
            )
        secondary_only = {
            "--operate-on-gie-id": self.operate_on_gie_id,
            "--operate-on-class-ids": self.operate_on_class_ids or None,
            "--input-object-min-width": self.input_object_min_width,
            "--input-object-min-height": self.input_object_min_height,
            "--input-object-max-width": self.input_object_max_width,
            "--input-object-max-height": self.input_object_max_height,
        }
        given = [name for name, value in secondary_only.items() if value is not None]
        if self.mode == "primary" and given:
            raise EdgemlicError(
                f"{', '.join(given)} apply to a secondary classifier (objects of a detector); "
                "add --mode secondary or drop them"
            )
        numbers = {name.lstrip("-"): value for name, value in secondary_only.items()} | {
            "gie-unique-id": self.gie_unique_id,
            "batch-size": self.batch_size,
        }
        for name, value in numbers.items():
            values = value if isinstance(value, tuple) else (value,)
            if any(v is not None and v < 0 for v in values):
                raise EdgemlicError(f"--{name} {value}: must not be negative")
        if self.gie_unique_id == 0 or self.batch_size == 0:
            raise EdgemlicError("--gie-unique-id and --batch-size must be at least 1")
        if self.gpu_id < 0:
            raise EdgemlicError(f"--gpu-id {self.gpu_id}: must not be negative")

    @property
    def unique_id(self) -> int:
        return self.gie_unique_id or (1 if self.mode == "primary" else 2)

    @property
    def batch(self) -> int:
        return self.batch_size or (1 if self.mode == "primary" else 16)


@dataclass(frozen=True)
class DeepStreamExport:
    """The files `write_deepstream` wrote, and the measured preprocessing cost when images were given."""

    folder: Path
    config: Path
    labels: Path
    onnx: Path
    parser_source: Path
    makefile: Path
    preprocessing: Comparison | None = None

    @property
    def written(self) -> list[Path]:
        return [self.config, self.labels, self.onnx, self.parser_source, self.makefile]


def check_foldable(info: OnnxModelInfo) -> None:
    """Only an FP32 graph's first convolution can absorb the std exactly."""
    if info.card.precision != "fp32" or info.has_float16 or "QuantizeLinear" in info.op_types:
        raise EdgemlicError(
            f"{info.path}: the DeepStream export folds the std into FP32 weights, and this graph is "
            f"{info.card.precision}; give model.fp32.onnx (nvinfer builds the FP16 engine from it: "
            "--precision fp16)"
        )


def fold_std_into_first_conv(proto: Any, card: ModelCard, name: str = "model") -> Any:
    """A copy of the graph whose input is (x/255 - mean[c]) instead of (x/255 - mean[c]) / std[c].

    The image input must feed exactly one node, a Conv with group 1 and constant weights: its weights
    W[:, c] become W[:, c] / std[c] (in place, or as a new initializer where other nodes share them). The
    copy's card keeps the mean and says std 1, which describes its input exactly for edgemlic's runtime
    too, and records the folded std in its provenance.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    image_input = graph.input[0].name
    consumers = [n for n in graph.node if image_input in n.input]
    conv = consumers[0] if len(consumers) == 1 else None
    if conv is None or conv.op_type != "Conv" or list(conv.input).index(image_input) != 0:
        found = ", ".join(n.op_type for n in consumers) or "nothing"
        raise EdgemlicError(
            f"{name}: the std can only be folded into a convolution that reads the image directly, and "
            f"the input {image_input!r} feeds {found}; export a network that starts with a convolution"
        )
    groups = next((a.i for a in conv.attribute if a.name == "group"), 1)
    weights = {t.name: t for t in graph.initializer}
    if groups != 1 or conv.input[1] not in weights:
        raise EdgemlicError(
            f"{name}: the first convolution is grouped ({groups}) or has computed weights; its weights "
            "cannot absorb a per-channel std"
        )
    weight = numpy_helper.to_array(weights[conv.input[1]])
    if weight.dtype != np.float32 or weight.ndim != 4 or weight.shape[1] != 3:
        raise EdgemlicError(
            f"{name}: the first convolution's weights are {weight.dtype} of shape {weight.shape}, not "
            "float32 O x 3 x kH x kW"
        )
    std = np.asarray(card.preprocessing.std, dtype=np.float32)
    folded = numpy_helper.from_array(weight / std[None, :, None, None], f"{conv.input[1]}_std_folded")
    shared = sum(list(n.input).count(conv.input[1]) for n in graph.node) > 1
    if shared:
        graph.initializer.append(folded)
        conv.input[1] = folded.name
    else:
        weights[conv.input[1]].CopyFrom(folded)
        weights[conv.input[1]].name = conv.input[1]
    pre = card.preprocessing
    provenance = {**card.provenance, "deepstream_folded_std": list(pre.std)}
    set_card(model, card.replace(preprocessing=replace(pre, std=(1.0, 1.0, 1.0)), provenance=provenance))
    return model


def nvinfer_offsets(card: ModelCard) -> tuple[float, float, float]:
    """offsets[c] = 255 mean[c]: with net-scale-factor 1/255 nvinfer then feeds x/255 - mean[c]."""
    return tuple(255.0 * m for m in card.preprocessing.mean)


def nvinfer_config(
    info: OnnxModelInfo,
    placement: ClassifierPlacement,
    scaling: NvinferScaling,
    *,
    onnx_file: str,
    labels_file: str,
    parser_library: str = PARSER_LIBRARY,
) -> dict[str, str]:
    """The [property] keys of the Gst-nvinfer config, in the order they are written.

    Keys and values as the Gst-nvinfer configuration table documents them; relative paths resolve from
    the config file's folder (nvinfer's `get_absolute_file_path`). model-engine-file is the name nvinfer
    gives the engine it builds from onnx-file (`<onnx>_b<batch>_gpu<id>_<fp32|fp16>.engine`), so the
    first run builds and saves it and later runs load it.
    """
    card = info.card
    thresholds = card.thresholds()
    keys = {
        "gpu-id": str(placement.gpu_id),
        "net-scale-factor": repr(NET_SCALE_FACTOR),
        "offsets": ";".join(repr(o) for o in nvinfer_offsets(card)),
        "model-color-format": "0",  # RGB, the order edgemlic decodes and trains in
        "onnx-file": onnx_file,
        "model-engine-file": (
            f"{onnx_file}_b{placement.batch}_gpu{placement.gpu_id}_{placement.precision}.engine"
        ),
        "labelfile-path": labels_file,
        "batch-size": str(placement.batch),
        "network-mode": str(NETWORK_MODES[placement.precision]),
        "network-type": "1",  # classifier
        "process-mode": str(MODES[placement.mode]),
        "gie-unique-id": str(placement.unique_id),
        "output-blob-names": info.output_name,
        # The parser applies the card's per-class thresholds and ignores this one; it is the lowest of
        # them, so nothing the parser could report is below it.
        "classifier-threshold": repr(float(thresholds.min())),
        "classifier-async-mode": "0",  # 1 needs a tracker upstream; see README "DeepStream"
        **_scaling_keys(scaling),
        "parse-classifier-func-name": PARSER_FUNCTION,
        "custom-lib-path": parser_library,
    }
    if placement.mode == "secondary":
        keys |= _secondary_keys(placement)
    return keys


def _scaling_keys(scaling: NvinferScaling) -> dict[str, str]:
    """How nvinfer scales the frame or object; symmetric-padding only means something with padding."""
    keys = {"maintain-aspect-ratio": str(int(scaling.maintain_aspect_ratio))}
    if scaling.maintain_aspect_ratio:
        keys["symmetric-padding"] = str(int(scaling.symmetric_padding))
    return keys | {
        "scaling-filter": str(scaling.scaling_filter),
        "scaling-compute-hw": str(scaling.scaling_compute_hw),
    }


def _secondary_keys(placement: ClassifierPlacement) -> dict[str, str]:
    """Which detector's objects a secondary classifier takes: the detector, its classes, their sizes."""
    keys = {"operate-on-gie-id": str(placement.operate_on_gie_id or 1)}
    if placement.operate_on_class_ids:
        keys["operate-on-class-ids"] = ";".join(map(str, placement.operate_on_class_ids))
    for key, value in (
        ("input-object-min-width", placement.input_object_min_width),
        ("input-object-min-height", placement.input_object_min_height),
        ("input-object-max-width", placement.input_object_max_width),
        ("input-object-max-height", placement.input_object_max_height),
    ):
        if value is not None:
            keys[key] = str(value)
    return keys


def render_config(keys: dict[str, str], info: OnnxModelInfo, placement: ClassifierPlacement) -> str:
    card = info.card
    return (
        f"# Gst-nvinfer config written by edgemlic {__version__} (`edgemlic engine deepstream`) for\n"
        f"# {info.path.name} (sha256 {info.sha256[:16]}...): {placement.mode} multilabel classifier,\n"
        f"# {card.num_classes} classes, {card.preprocessing.input_size} px RGB input.\n"
        "# y = net-scale-factor * (x - offsets[c]) gives x/255 - mean[c]; the std is folded into the\n"
        "# first convolution of onnx-file. Build the parser library with `make` in this folder.\n"
        "[property]\n" + "".join(f"{key}={value}\n" for key, value in keys.items())
    )


def labels_text(card: ModelCard) -> str:
    """nvinfer's classifier labels file: one line per output layer, its labels separated by ';'."""
    bad = [c for c in card.classes if ";" in c or "\n" in c or "\r" in c]
    if bad:
        raise EdgemlicError(
            f"class names {bad} contain ';' or a line break, which nvinfer's labels file cannot hold; "
            "rename the classes in the card"
        )
    return ";".join(card.classes) + "\n"


def _c_string(text: str) -> str:
    """A C string literal of `text`'s UTF-8 bytes; anything but plain printable ASCII as octal escapes."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _template(name: str) -> str:
    return resources.files("edgemlic.export").joinpath("deepstream_parser", name).read_text("utf-8")


def parser_source(info: OnnxModelInfo) -> str:
    """The C++ parser with the card's labels and per-class thresholds baked in.

    Thresholds are written as hexadecimal float literals of the float32 values the Python runtime
    compares with (`ModelCard.thresholds`), so both decide `score >= threshold` on the same numbers.
    """
    card = info.card
    thresholds = card.thresholds()
    rows = [f"    {float(t).hex()}f, /* class {i}: {float(t):.9g} */" for i, t in enumerate(thresholds)]
    labels = [f"    {_c_string(c)}," for c in card.classes]
    replacements = {
        "@MODEL@": info.path.name.replace("*/", "*_/"),  # it stands in a comment
        "@SHA256@": info.sha256,
        "@NUM_CLASSES@": str(card.num_classes),
        "@OUTPUT_NAME@": _c_string(info.output_name),
        "@THRESHOLDS@": "\n".join(rows),
        "@LABELS@": "\n".join(labels),
    }
    source = _template(f"{PARSER_SOURCE}.in")
    for key, value in replacements.items():
        source = source.replace(key, value)
    return source


def makefile_text() -> str:
    return _template("Makefile.in").replace("@LIBRARY@", PARSER_LIBRARY)


def stand_in_headers() -> Path:
    """The folder of the stand-in nvdsinfer_custom_impl.h (documented DeepStream types only) the tests
    compile the parser against where the SDK is absent."""
    return Path(str(resources.files("edgemlic.export").joinpath("deepstream_parser", STAND_IN_HEADERS)))


def nvinfer_pixels(image: ImageSource, size: int, scaling: NvinferScaling = NvinferScaling()) -> np.ndarray:
    """A simulation of the uint8 RGB network input nvinfer makes of a whole frame (or an object crop).

    As gstnvinfer.cpp `get_converted_buffer`: the source rectangle's width and height are rounded down
    to even numbers; without maintain-aspect-ratio it is stretched to size x size; with it, scaled to
    fit and padded with black (0), centred when symmetric-padding is set, else at the right and bottom.
    The scaler itself (NvBufSurfTransform on the GPU or VIC) cannot run here: Pillow's BOX filter, the
    area average that GPU-Super computes when shrinking, stands in for it. An object smaller than the
    network input is enlarged on the device by a filter this does not reproduce.
    """
    img = as_rgb_image(image)
    width, height = img.width - img.width % 2, img.height - img.height % 2
    if (width, height) != img.size:
        img = img.crop((0, 0, width, height))
    if not scaling.maintain_aspect_ratio:
        return np.asarray(img.resize((size, size), Image.Resampling.BOX))
    scaled_height = size * height / width
    if scaled_height <= size:
        new_w, new_h = size, int(scaled_height)
    else:
        new_w, new_h = int(size * width / height), size
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    left, top = ((size - new_w) // 2, (size - new_h) // 2) if scaling.symmetric_padding else (0, 0)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = np.asarray(
        img.resize((new_w, new_h), Image.Resampling.BOX)
    )
    return canvas


def nvinfer_normalize(pixels: np.ndarray, card: ModelCard) -> np.ndarray:
    """nvinfer's preprocessing of HxWx3 uint8 RGB with this export's keys: a 3xHxW float32 array of
    net-scale-factor * (x - offsets[c]), computed in float32 as nvinfer's CUDA conversion does."""
    offsets = np.asarray(nvinfer_offsets(card), dtype=np.float32)
    chw = pixels.astype(np.float32).transpose(2, 0, 1)
    return (chw - offsets[:, None, None]) * np.float32(NET_SCALE_FACTOR)


def measure_nvinfer_preprocessing(
    original: Graph, folded: Any, images: Sequence[ImageSource], scaling: NvinferScaling = NvinferScaling()
) -> Comparison:
    """The folded graph on nvinfer-style input (simulated scaling, nvinfer's normalization) against the
    original pipeline (edgemlic's resize, centre crop and normalization, the original graph), judged at
    the card's thresholds: what deploying through nvinfer changes, scaling included."""
    card = original.card
    reference = original.scores(preprocess_batch(list(images), card.preprocessing))
    size = card.preprocessing.input_size
    batch = np.stack([nvinfer_normalize(nvinfer_pixels(im, size, scaling), card) for im in images])
    return compare_scores(reference, graph_scores(folded, batch, "folded graph"), card.thresholds())


def write_deepstream(
    onnx_path: str | Path,
    out: str | Path,
    placement: ClassifierPlacement = ClassifierPlacement(),
    scaling: NvinferScaling = NvinferScaling(),
    measure_images: Sequence[ImageSource] = (),
) -> DeepStreamExport:
    """Write the nvinfer config, labels file, folded ONNX graph, parser source and Makefile to `out`.

    With `measure_images`, the folded graph on simulated nvinfer input is compared with the original
    pipeline on them (`measure_nvinfer_preprocessing`) and the result returned with the files.
    """
    original = load_graph(onnx_path)
    if original.card.preprocessing.input_dtype != "float32":
        raise EdgemlicError(
            f"{original.path}: this graph takes uint8 crops and normalizes inside, and nvinfer feeds the "
            "network float32 it has normalized itself; give model.fp32.onnx"
        )
    info = read_onnx_model(original.path)
    check_foldable(info)
    folder = make_folder(out)
    folded = fold_std_into_first_conv(original.proto, info.card, str(info.path))
    onnx_file = f"{info.path.name.removesuffix('.onnx')}.deepstream.onnx"
    keys = nvinfer_config(info, placement, scaling, onnx_file=onnx_file, labels_file="labels.txt")
    labels = labels_text(info.card)
    comparison = (
        measure_nvinfer_preprocessing(original, folded, measure_images, scaling) if measure_images else None
    )
    mode = placement.mode
    result = DeepStreamExport(
        folder=folder,
        config=folder / f"config_infer_{mode}_edgemlic.txt",
        labels=folder / "labels.txt",
        onnx=folder / onnx_file,
        parser_source=folder / PARSER_SOURCE,
        makefile=folder / "Makefile",
        preprocessing=comparison,
    )
    write_graph(folded, result.onnx)
    write_text(result.config, render_config(keys, info, placement))
    write_text(result.labels, labels)
    write_text(result.parser_source, parser_source(info))
    write_text(result.makefile, makefile_text())
    return result
