"""Mixed INT8: keep the layers that cost the most decisions out of INT8 until an accuracy budget holds.

The cost of quantizing is measured in the user's terms, on held-out labelled images that calibration
never saw: flipped yes/no decisions, the change of micro-F1 and the largest probability change, all
against the FP32 graph (`compare_scores`, the same measure parity uses). Steps:

1. Plain INT8 on the search images. Within the budget: nothing to do.
2. Sensitivity: each Conv/Gemm in turn is left out of INT8 (everything else stays quantized) and the
   graph measured again; a layer whose absence removes the most error is the most damaging one. Ties in
   flips are broken by the mean score change, which flips on a few hundred images leave to chance.
3. The layers, most damaging first, are left out one more at a time, each kept only if the mix
   gets closer to the budget with it, until the budget holds or `max_float_layers` are out. After a
   step that makes the mix worse, the remaining layers are measured again beside those chosen.
4. The verdict: plain and mixed INT8 measured again on the other half of the held-out images, so the
   reported result is not tuned to its own test. A missed verdict is a refusal (unless asked to keep
   the graph); each half holds at least 3/B decisions for a flip budget B where the split allows, and
   the report gives the flip rate's 95 % interval and says when the decisions are too few to judge B.

A layer left out computes from the float tensor before its input's Q/DQ pair, with float weights:
float16 in the TensorRT form (Casts around it, so the graph stays strongly typed and TensorRT 10 and 11
build the layer in FP16), float32 in the CPU form. The calibrated ranges do not depend on the choice,
so they are computed once for the full graph and the choice is applied to its quantized form.

Float layers get float weights, so the file grows. Keeping their INT8 weights behind a DequantizeLinear was
measured and rejected for the CPU form (resnet_tiny, 6 float layers, 200 generated images): the file stays
at 5.0 MB instead of 5.9, but ONNX Runtime dequantizes the weights at every run (0.97 ms a batch-1 image
against 0.72 with float weights and 0.90 for FP32) and their rounding stays, which takes back most of what
the float layer bought (mean |dp| 0.0027 against 0.0024; plain INT8 0.0029). The export report compares
the mixed graph's speed with FP32's and warns when it is slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.compare import Budget, Comparison, compare_scores
from edgemlic.data.coco import load_coco_split
from edgemlic.errors import EdgemlicError
from edgemlic.export.onnx import graph_scores
from edgemlic.export.report import comparison_figures
from edgemlic.images import preprocess_batch

LAYER_OP_TYPES = ("Conv", "Gemm", "Add")
"""The quantized nodes that can be kept in float: the weighted layers and the residual additions."""
WEIGHTED = ("Conv", "Gemm")
HELD_OUT_IMAGES = 128
"""Images per held-out half (search, verdict) at least; more when the budget needs them (`needed_images`),
fewer when the split has fewer left after calibration."""
DECISIONS_PER_BUDGET = 3
"""A flip-rate budget B is judged on at least 3/B decisions: with no flip in n decisions the 95 % upper
bound of the rate is about 3/n (the rule of three), so fewer decisions cannot show that B holds."""
SPEED_ROUNDS = 5
"""Rounds of the speed comparison, each timing every graph in turn: changing load touches all three alike."""
CALLS_PER_ROUND = 4


def int8_budget(
    max_delta_f1: float | None = None, max_flip_rate: float | None = None, max_abs_diff: float | None = None
) -> Budget:
    """The budget mixed INT8 must meet: the limits given, parity's INT8 limits for F1 and flips otherwise."""
    from edgemlic.compare import BUDGETS

    parity = BUDGETS["parity"]["int8"]
    return Budget(
        max_delta_f1=parity.max_delta_f1 if max_delta_f1 is None else max_delta_f1,
        max_flip_rate=parity.max_flip_rate if max_flip_rate is None else max_flip_rate,
        max_abs_diff=max_abs_diff,
    )


@dataclass(frozen=True)
class Labelled:
    """Preprocessed images and their true labels."""

    inputs: np.ndarray
    targets: np.ndarray


def needed_images(budget: Budget, classes: int) -> int:
    """Images per held-out half for the budget's flip rate to be judged: DECISIONS_PER_BUDGET / B
    decisions, at least HELD_OUT_IMAGES images."""
    needed = decisions_needed(budget)
    return HELD_OUT_IMAGES if needed is None else max(HELD_OUT_IMAGES, math.ceil(needed / classes))


def held_out_images(
    root: str | Path,
    split: str,
    card: ModelCard,
    exclude: tuple[Path, ...],
    seed: int = 0,
    budget: Budget | None = None,
) -> tuple[Labelled, Labelled]:
    """(search, verdict): two disjoint halves of the split's images that calibration did not use, each
    as large as the budget needs (`needed_images`) where the split has that many."""
    samples = load_coco_split(root, split, card.classes, keep_negatives=True).samples
    used = {p.resolve() for p in exclude}
    left = [s for s in samples if s.path.resolve() not in used]
    order = np.random.default_rng(seed).permutation(len(left))
    half = min(needed_images(budget or int8_budget(), card.num_classes), len(left) // 2)
    if half < 8:
        raise EdgemlicError(
            f"{root}: split {split!r} has {len(left)} images besides the calibration images; choosing float "
            "layers needs at least 16 more, to search on half and judge on the other; use fewer "
            "--calib-images or a larger split"
        )
    chosen = [left[i] for i in order[: 2 * half]]

    def labelled(part: list) -> Labelled:
        return Labelled(
            preprocess_batch([s.path for s in part], card.preprocessing), np.stack([s.target for s in part])
        )

    return labelled(chosen[:half]), labelled(chosen[half:])


def layer_names(fp32: Any) -> list[str]:
    """The layers of an FP32 graph that INT8 quantizes, in graph order."""
    return [_layer_name(node) for node in fp32.graph.node if node.op_type in LAYER_OP_TYPES]


def _layer_name(node: Any) -> str:
    """A weighted layer by its weight's module path (0.layer3.1.conv2), an addition by its node name."""
    return node.input[1].removesuffix(".weight") if node.op_type in WEIGHTED else node.name


def keep_in_float(int8: Any, fp32: Any, layers: list[str], target: str) -> Any:
    """A copy of the INT8 graph in which `layers` compute from float inputs and float weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(int8)
    graph = model.graph
    by_layer = {_layer_name(n): n for n in fp32.graph.node if n.op_type in LAYER_OP_TYPES}
    unknown = sorted(set(layers) - set(by_layer))
    if unknown:
        raise EdgemlicError(f"the graph has no quantized layer named {', '.join(unknown)}")
    weights = {t.name: t for t in fp32.graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    fp32_producer = {out: n for n in fp32.graph.node for out in n.output}
    nodes = {n.name: n for n in graph.node}
    half = target == "tensorrt"
    for layer in layers:
        node = nodes[by_layer[layer].name]
        weighted = node.op_type in WEIGHTED
        inputs = [
            _float_input(t, graph, producer, fp32_producer)
            for t in (node.input[:1] if weighted else node.input)
        ]
        params = []
        for name in by_layer[layer].input[1:] if weighted else ():
            kept = f"{name}_{'float16' if half else 'float'}"
            value = numpy_helper.to_array(weights[name]).astype(np.float16 if half else np.float32)
            graph.initializer.append(numpy_helper.from_array(value, kept))
            params.append(kept)
        if half:  # Casts in and out: the layer is float16 in a graph that stays strongly typed
            for i, tensor in enumerate(inputs):
                inputs[i] = f"{layer}_input{i}_float16"
                cast = helper.make_node("Cast", [tensor], [inputs[i]], to=TensorProto.FLOAT16)
                graph.node.insert(list(graph.node).index(node), cast)
            result, node.output[0] = node.output[0], f"{layer}_output_float16"
            cast = helper.make_node("Cast", [node.output[0]], [result], to=TensorProto.FLOAT)
            graph.node.insert(list(graph.node).index(node) + 1, cast)
        node.input[:] = [*inputs, *params]
    _prune(graph)
    return model


PASS_THROUGH = ("Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape")
"""Ops of one data input between a layer and its producer whose quantized copy a float layer bypasses."""


def _float_input(tensor: str, graph: Any, producer: dict[str, Any], fp32_producer: dict[str, Any]) -> str:
    """The same value as `tensor` without the quantization on its way from the previous layer or Add.

    A Q -> DQ pair is skipped, and a Relu or MaxPool reading a quantized value is repeated on the float
    one. ONNX Runtime's U8 quantizer drops a Relu after a Conv (the unsigned Q clamps at zero in its
    place), so where the FP32 graph had a Relu there, the float path gets it back.
    """
    node = producer.get(tensor)
    if node is None:
        return tensor
    if node.op_type == "DequantizeLinear":
        q = producer.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            return tensor
        before = q.input[0]
        wanted, found = fp32_producer.get(before), producer.get(before)
        if wanted is not None and found is not None and wanted.op_type != found.op_type:
            if wanted.op_type != "Relu":
                return tensor  # an op the quantizer folded that is not re-created here: stay quantized
            return _repeat(wanted, before, graph, producer, after=found)
        return _float_input(before, graph, producer, fp32_producer)
    if node.op_type in PASS_THROUGH:
        inner = _float_input(node.input[0], graph, producer, fp32_producer)
        if inner != node.input[0]:
            return _repeat(node, inner, graph, producer, after=node)
    return tensor


def _repeat(template: Any, data: str, graph: Any, producer: dict[str, Any], after: Any) -> str:
    """`template`'s op with its attributes, on the tensor `data`, inserted once after the node `after`."""
    from onnx import helper

    output = f"{data}_{template.op_type.lower()}_float"
    if output not in producer:
        node = helper.make_node(template.op_type, [data, *template.input[1:]], [output])
        node.attribute.extend(template.attribute)
        graph.node.insert(list(graph.node).index(after) + 1, node)
        producer[output] = node
    return output


def _prune(graph: Any) -> None:
    """Remove the nodes nothing reads any more (a layer's weight DQ, a Q/DQ pair only it used) and the
    initializers they read."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for n in graph.node for name in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


# ---- measuring --------------------------------------------------------------------------------------


def wilson_interval(flips: int, decisions: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a flip rate. Decisions of one image are correlated, so the
    true interval is somewhat wider: read it as a lower bound on the uncertainty."""
    if decisions == 0:
        return (0.0, 1.0)
    p, n = flips / decisions, decisions
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - spread), min(1.0, centre + spread))


def decisions_needed(budget: Budget) -> int | None:
    """How many decisions can show that the budget's flip rate B holds: DECISIONS_PER_BUDGET / B."""
    rate = budget.max_flip_rate
    return math.ceil(DECISIONS_PER_BUDGET / rate) if rate else None


def _record(c: Comparison, classes: int) -> dict[str, Any]:
    """The figures of one graph against the FP32 graph that the export report keeps."""
    decisions = c.images * classes
    flips = round(c.flip_rate * decisions)
    return {
        "images": c.images,
        "decisions": decisions,
        "flips": flips,
        "flip_rate": round(c.flip_rate, 6),
        "flip_rate_ci95": [round(v, 6) for v in wilson_interval(flips, decisions)],
        "mean_abs_diff": round(c.mean_abs_diff, 6),
        "delta_micro_f1": None if c.delta_micro_f1 is None else round(c.delta_micro_f1, 6),
        "max_abs_diff": round(c.max_abs_diff, 6),
        "passed": c.passed,
        "failures": list(c.failures),
    }


class Judge:
    """Measures graphs against the FP32 graph's scores on one labelled set, under one budget."""

    def __init__(self, fp32: Any, images: Labelled, thresholds: np.ndarray, budget: Budget) -> None:
        self.images, self.thresholds, self.budget = images, thresholds, budget
        self.reference = graph_scores(fp32, images.inputs)

    def __call__(self, model: Any) -> Comparison:
        scores = graph_scores(model, self.images.inputs, "mixed-precision candidate")
        return compare_scores(self.reference, scores, self.thresholds, self.budget, self.images.targets)


def _rank(c: Comparison) -> tuple[float, float, float]:
    """What orders candidates: how far over the budget, then flipped decisions, then the mean score
    change. Flips on a few hundred images tie often; the mean |dp| over every decision (the summed
    score change) almost never does, and it moves before a decision flips."""
    return (c.budget_share, c.flip_rate, c.mean_abs_diff)


@dataclass(frozen=True)
class MixedChoice:
    """The layers kept in float, and every figure that led there."""

    float_layers: list[str]
    budget: Budget
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    """Per layer, the search set's figures with only that layer left out of INT8, most damaging first."""
    search: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    """The chosen graph (the plain INT8 graph itself when no layer is kept in float)."""
    reranked: int = 0
    """How often the search measured the remaining layers again after a step made the mix worse."""

    @property
    def verdict_met(self) -> bool:
        return self.verdict["mixed"]["passed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "float_layers": self.float_layers,
            "budget": self.budget.to_dict(),
            "verdict_met": self.verdict_met,
            "verdict_judgeable": self.verdict["mixed"]["judgeable"],
            "reranked": self.reranked,
            "search": self.search,
            "verdict": self.verdict,
            "speed": self.speed,
            "sensitivity": self.sensitivity,
        }


def choose_float_layers(
    fp32: Any,
    int8: Any,
    target: str,
    search: Labelled,
    verdict: Labelled,
    thresholds: np.ndarray,
    budget: Budget,
    max_float_layers: int,
    keep_missed: bool = False,
) -> MixedChoice:
    """The fewest layers to keep in float for the budget to hold on `search`, judged on `verdict`.

    Raises a one-line EdgemlicError with the best mix found when `max_float_layers` are not enough, and
    when the mix found misses the budget on the verdict images, unless `keep_missed`.
    """
    classes = len(thresholds)
    judge = Judge(fp32, search, thresholds, budget)

    def measure(layers: list[str]) -> Comparison:
        return judge(keep_in_float(int8, fp32, layers, target))

    plain = judge(int8)
    found = _Search(plain) if plain.passed else _search(measure, layer_names(fp32), plain, max_float_layers)
    if not found.best.passed:
        raise _search_missed(found, plain, classes, max_float_layers, search.inputs.shape[0])
    mixed = keep_in_float(int8, fp32, found.chosen, target) if found.chosen else int8
    judged = _judge_verdict(Judge(fp32, verdict, thresholds, budget), int8, mixed, classes)
    if not judged["mixed"]["passed"] and not keep_missed:
        raise _verdict_missed(
            len(found.chosen), judged["mixed"], search.inputs.shape[0], verdict.inputs.shape[0]
        )
    return MixedChoice(
        float_layers=found.chosen,
        budget=budget,
        sensitivity=[{"layer": layer, **_record(c, classes)} for layer, c in found.sensitivity.items()],
        search={"plain": _record(plain, classes), "mixed": _record(found.best, classes)},
        verdict=judged,
        speed=compare_speed(fp32, int8, mixed, search.inputs[:1]) if found.chosen else {},
        model=mixed,
        reranked=found.reranked,
    )


@dataclass(frozen=True)
class _Search:
    """Where the search ended: the layers chosen and their comparison, what each layer alone did, most
    damaging first, and how often the remaining layers were measured again."""

    best: Comparison
    chosen: list[str] = field(default_factory=list)
    sensitivity: dict[str, Comparison] = field(default_factory=dict)
    reranked: int = 0


def _search(
    measure: Callable[[list[str]], Comparison], layers: list[str], plain: Comparison, max_float_layers: int
) -> _Search:
    """Steps 2 and 3: rank the layers by what leaving each one alone out of INT8 does, then add them, most
    damaging first, each kept only if the mix gets closer to the budget with it."""
    left_out = {layer: measure([layer]) for layer in layers}
    ranking = sorted(left_out, key=lambda layer: _rank(left_out[layer]))  # stable: graph order on ties
    sensitivity = {layer: left_out[layer] for layer in ranking}
    chosen, best, reranked = [], plain, 0
    while ranking and not best.passed and len(chosen) < max_float_layers:
        layer = ranking.pop(0)  # most damaging first; it stays only if the mix gets better with it
        candidate = measure([*chosen, layer])
        if _rank(candidate) < _rank(best):
            chosen, best = [*chosen, layer], candidate
            continue
        if not ranking:
            break
        # Layers interact: the ranking measured one layer at a time no longer holds once a step made
        # the mix worse. Measure the rest again beside the layers chosen, and go on from the best.
        reranked += 1
        again = {other: measure([*chosen, other]) for other in ranking}
        ranking.sort(key=lambda other: _rank(again[other]))
        if _rank(again[ranking[0]]) >= _rank(best):
            break  # no remaining layer improves the mix
        layer = ranking.pop(0)
        chosen, best = [*chosen, layer], again[layer]
    return _Search(best, chosen, sensitivity, reranked)


def _judge_verdict(final: Judge, plain: Any, mixed: Any, classes: int) -> dict[str, dict[str, Any]]:
    """Step 4: plain and mixed INT8 on the verdict images, each saying whether its decisions are enough
    to judge the flip-rate budget."""
    needed = decisions_needed(final.budget)
    return {
        name: {
            **_record(c, classes),
            "decisions_needed": needed,
            "judgeable": needed is None or c.images * classes >= needed,
        }
        for name, c in (("plain", final(plain)), ("mixed", final(mixed)))
    }


def _search_missed(
    found: _Search, plain: Comparison, classes: int, max_float_layers: int, images: int
) -> EdgemlicError:
    best, before = (
        comparison_figures(_record(found.best, classes)),
        comparison_figures(_record(plain, classes)),
    )
    return EdgemlicError(
        f"INT8 misses its budget with up to {max_float_layers} layers kept in float: the best found "
        f"({len(found.chosen)} layers) has {best} against {before} for plain INT8 on "
        f"{images} held-out images ({'; '.join(found.best.failures)}); allow "
        "more with --max-float-layers or loosen the budget; nothing was written"
    )


def _verdict_missed(
    layers: int, mixed: dict[str, Any], search_images: int, verdict_images: int
) -> EdgemlicError:
    return EdgemlicError(
        f"INT8 with {layers} layers kept in float met its budget on the {search_images} "
        f"search images but misses it on the {verdict_images} verdict images "
        f"({'; '.join(mixed['failures'])}): the choice does not carry over to other images; "
        "allow more float layers, use more held-out images, or keep the graph anyway with "
        "--keep-missed-budget; nothing was written"
    )


def compare_speed(fp32: Any, plain: Any, mixed: Any, image: np.ndarray) -> dict[str, Any]:
    """Batch-1 images/s of the FP32, plain INT8 and mixed graphs in ONNX Runtime on this CPU,
    alternating over a few rounds. The mixed graph replaces the FP32 one: slower than it, it is no gain."""
    from edgemlic.bench.timing import time_model
    from edgemlic.runtime.onnx_backend import OnnxBackend, OnnxRuntimeOptions

    # Spinning off: an idle session's spinning threads would take the cores from the one being timed.
    graphs = (("fp32", fp32), ("plain", plain), ("mixed", mixed))
    quiet = OnnxRuntimeOptions(spin=False)
    backends = [OnnxBackend(m.SerializeToString(), device="cpu", options=quiet, name=n) for n, m in graphs]
    rates: list[list[float]] = [[] for _ in backends]
    try:
        for backend in backends:
            backend.infer(image)  # warm-up
        for _ in range(SPEED_ROUNDS):
            for i, backend in enumerate(backends):
                timed = time_model(backend, [image], warmup=0, iters=CALLS_PER_ROUND, seconds=0.0)
                rates[i].append(timed["images_per_s"])
    finally:
        for backend in backends:
            backend.close()
    fp32_rate, plain_rate, mixed_rate = (float(np.median(r)) for r in rates)
    return {
        "backend": "onnxruntime cpu without spinning, batch 1",
        "fp32_images_per_s": round(fp32_rate, 2),
        "plain_images_per_s": round(plain_rate, 2),
        "mixed_images_per_s": round(mixed_rate, 2),
        "mixed_share": round(mixed_rate / plain_rate, 4),
        "mixed_vs_fp32": round(mixed_rate / fp32_rate, 4),
        "slower_than_fp32": mixed_rate < fp32_rate,
    }
