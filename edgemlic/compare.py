"""One comparison of two score arrays on the same images, and one table of how far apart they may be.

Three places compare scores: the export gate (the ONNX graph against PyTorch), the engine check (a
TensorRT engine against ONNX Runtime on the same graph) and `edgemlic parity` (any artifact against
a reference, in task terms). They all call `compare_scores` and read their limits from BUDGETS, by
stage and precision. A flipped decision (an image x class decision at the thresholds that differs
from the reference's) is counted one way everywhere: `flip_rate`, the share of such decisions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemlic.errors import EdgemlicError

STAGES = ("export", "engine", "parity")


@dataclass(frozen=True)
class Budget:
    """The most a candidate may differ from the reference; None means not limited."""

    max_delta_f1: float | None = None
    """|micro-F1 of the candidate - micro-F1 of the reference| (needs the true labels)."""
    max_delta_jaccard: float | None = None
    max_flip_rate: float | None = None
    max_abs_diff: float | None = None
    """Largest absolute probability difference over every image and class."""
    max_mean_abs_diff: float | None = None
    """Mean absolute probability difference: a small, systematic shift of every score (another model)
    moves the mean where quantization noise moves only a few scores far."""

    def __post_init__(self) -> None:
        """Every limit is a fraction (of decisions, of F1 or Jaccard, of a probability), checked here so
        that parity, export and the Python API refuse the same numbers with the same line."""
        from edgemlic import checks

        for name, value in self.to_dict().items():
            if value is not None:
                checks.fraction(name, value)

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


_INT8_SCORES = {"max_abs_diff": 0.5, "max_mean_abs_diff": 0.03}
"""INT8's limits on score changes, the same at export and in parity (see the figures below)."""

BUDGETS: dict[str, dict[str, Budget]] = {
    "export": {
        "fp32": Budget(max_abs_diff=1e-4, max_mean_abs_diff=1e-5),
        "fp16": Budget(max_abs_diff=0.02, max_mean_abs_diff=0.002),
        "int8": Budget(max_flip_rate=0.1, **_INT8_SCORES),
    },
    "engine": {
        "fp32": Budget(max_abs_diff=5e-3),
        "fp16": Budget(max_abs_diff=2e-2),
        "int8": Budget(max_abs_diff=6e-2),
    },
    "parity": {
        "fp32": Budget(
            max_delta_f1=0.0,
            max_delta_jaccard=0.0,
            max_flip_rate=0.0,
            max_abs_diff=1e-4,
            max_mean_abs_diff=1e-5,
        ),
        "fp16": Budget(
            max_delta_f1=0.005,
            max_delta_jaccard=0.005,
            max_flip_rate=0.005,
            max_abs_diff=0.02,
            max_mean_abs_diff=0.002,
        ),
        "int8": Budget(max_delta_f1=0.02, max_delta_jaccard=0.02, max_flip_rate=0.02, **_INT8_SCORES),
        # OpenVINO's bf16 (8-bit mantissa) on an FP32 graph; its figures are below the table
        "bf16": Budget(
            max_delta_f1=0.01,
            max_delta_jaccard=0.01,
            max_flip_rate=0.02,
            max_abs_diff=0.2,
            max_mean_abs_diff=0.01,
        ),
    },
}
"""Limits by stage and precision. Non-finite scores fail at every stage.

| stage  | what is compared                       | fp32            | fp16             | int8                |
|--------|----------------------------------------|-----------------|------------------|---------------------|
| export | ONNX Runtime vs PyTorch (fp32), vs the | max 1e-4,       | max 0.02,        | flips 0.1, max 0.5, |
|        | FP32 graph (fp16, int8), gate images   | mean 1e-5       | mean 0.002       | mean 0.03           |
| engine | TensorRT vs ONNX Runtime, same graph   | max 5e-3        | max 2e-2         | max 6e-2            |
| parity | artifact vs reference, labelled split  | no flip, max    | 0.005 F1/J/flips,| 0.02 F1/J/flips,    |
|        |                                        | 1e-4, mean 1e-5 | max 0.02,        | max 0.5, mean 0.03  |
|        |                                        |                 | mean 0.002       |                     |

bf16 (parity only: OpenVINO's `openvino+bf16` runs an FP32 graph in bfloat16): 0.01 F1/J, flips 0.02,
max 0.2, mean 0.01. On the random-weight ResNet-50 of benchmarks/run.py, whose saturated scores are the
worst case, bf16 against ONNX Runtime FP32 on the 158 coco-mini val2017 photos: flips 1.1 %, max 0.071,
mean 0.0036 (INT8 there: flips 2.0 %, max 0.18). The score limits sit about 3 times above those, the flip
limit at INT8's.

"max" is the largest |probability difference| over every image and class, "mean" its mean.

Export: the FP32 graph only re-orders float operations. FP16 and INT8 are judged against the FP32 graph
on images calibration did not use; the INT8 gate stops a calibration gone wrong (ranges 1000x too wide:
flips 0.30, mean 0.32), its flip limit is looser than parity's because it counts few decisions (32
images). Engine: FP32 engines are built with TF32 off (`engine_fingerprint.TF32`), so they differ from
ONNX Runtime only by kernel choice and summation order, as the FP32 graph differs from PyTorch (1e-4 at
export); the engine limits stay as first set because no TensorRT engine has been measured yet (none
runs on the machine that set the others): tighten FP32 from what `pytest -m tensorrt -s` prints.

The score limits rest on these figures against the PyTorch checkpoint (benchmarks/score_limits.py):
resnet_tiny at 32 px on 400 generated images x 6 classes, trained as the tests train it (3 epochs; 30 epochs,
until it memorises its split), and on the 158 coco-mini val2017 photos x 12 classes (6 epochs on train2017):

| max / mean |dp| (flips)            | synthetic, 3 epochs   | synthetic, 30 epochs  | coco-mini            |
|-------------------------------------|-----------------------|-----------------------|----------------------|
| FP16                                | 1.1e-3 / 1e-4 (0)     | 8.4e-4 / 6e-5 (0.1%)  | 8e-5 / 1e-6 (0)      |
| INT8, TensorRT and CPU forms        | 0.078 / 0.010 (1.7%)  | 0.049 / 0.004 (0.5%)  | 0.176 / 2e-4 (0)     |
| another training (seed 1)           | 0.998 / 0.424 (50%)   | 0.879 / 0.143 (16%)   | 1.0 / 0.079 (7.9%)   |
| INT8, ranges 1000x too wide         | 0.50 / 0.32 (30%)     | 0.51 / 0.37 (64%)     | 0.50 / 0.49 (gate)   |
| weights moved 1 % of their spread   | 0.036 / 0.004 (0.5%)  | 0.024 / 0.002 (0.3%)  | 0.028 / 4e-5 (0)     |
| its INT8                            | 0.093 / 0.011 (1.2%)  | 0.062 / 0.004 (0.5%)  | 0.061 / 1.5e-4 (0)   |

Re-run 2026-12-02 on a Zen 3 without VNNI (benchmarks/results/score_limits-*.json), whose AVX2
kernels saturate 16-bit sums: INT8 max / mean 0.20 / 0.010, 0.19 / 0.009 and 0.27 / 0.005 (flips 0.6 %,
0.9 %, 0.4 %); ranges 1000x too wide are refused by the export gate in all three. The table's INT8 rows
come from an earlier machine its record does not name.

The limits sit about 3 times above the healthy figures of the table, about twice above the Zen 3's (the
largest change is a tail figure that grows with the data) and under the others: the mean catches another
model and a calibration gone wrong, the largest change a model that disagrees wildly on a few images. A
model fine-tuned a little further (the last two rows) is as close as INT8 noise and no score limit can tell
it apart: parity refuses it by its provenance (parity.descends).
"""


def budget(stage: str, precision: str) -> Budget:
    if stage not in BUDGETS:
        raise EdgemlicError(f"unknown comparison stage {stage!r}; one of {', '.join(STAGES)}")
    return BUDGETS[stage][precision]


@dataclass(frozen=True)
class Comparison:
    """How far a candidate's scores are from the reference's, and the verdict under a budget."""

    images: int
    max_abs_diff: float
    mean_abs_diff: float
    flip_rate: float
    micro_f1: float | None = None
    """The candidate's own task metrics and their deltas, when the true labels were given."""
    jaccard: float | None = None
    mAP: float | None = None
    delta_micro_f1: float | None = None
    delta_jaccard: float | None = None
    delta_mAP: float | None = None
    budget: Budget | None = None
    failures: tuple[str, ...] = ()
    """One line per exceeded limit, e.g. "flip_rate 0.031 exceeds max_flip_rate 0.02"."""

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def budget_share(self) -> float:
        """The largest limited figure as a multiple of its limit (above 1: over budget; 0 without a
        budget), so candidates can be ranked by how far they are from meeting it. A limit of 0 makes
        any excess count a billion times over."""
        if self.budget is None:
            return 0.0
        shares = [
            abs(getattr(self, figure) or 0.0) / max(limit, 1e-9)
            for name, figure in _LIMITED.items()
            if (limit := getattr(self.budget, name)) is not None
        ]
        return max(shares, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["budget"] = self.budget.to_dict() if self.budget else None
        record["failures"] = list(self.failures)
        record["passed"] = self.passed
        return record


_LIMITED = {
    "max_delta_f1": "delta_micro_f1",
    "max_delta_jaccard": "delta_jaccard",
    "max_flip_rate": "flip_rate",
    "max_abs_diff": "max_abs_diff",
    "max_mean_abs_diff": "mean_abs_diff",
}


def compare_scores(
    reference: np.ndarray,
    candidate: np.ndarray,
    thresholds: np.ndarray,
    budget: Budget | None = None,
    targets: np.ndarray | None = None,
) -> Comparison:
    """Compare candidate probabilities with the reference's on the same images (N x classes each).

    With `targets` (N x classes of 0/1) the task metrics and their deltas are filled in. Without a
    budget nothing is judged (the reference compared with itself, or a figure only reported).
    """
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if candidate.shape != reference.shape or reference.ndim != 2 or not len(reference):
        raise EdgemlicError(
            f"cannot compare scores of shape {candidate.shape} with a reference of shape {reference.shape}"
        )
    finite = bool(np.isfinite(candidate).all())
    # Metrics of NaN scores are meaningless; scoring them as all-negative keeps the row printable while
    # the failure says what happened.
    safe = candidate if finite else np.nan_to_num(candidate, nan=0.0, posinf=1.0, neginf=0.0)
    diff = np.abs(safe.astype(np.float64) - reference.astype(np.float64))
    flips = (safe >= thresholds) != (reference >= thresholds)
    figures: dict[str, Any] = {}
    if targets is not None:
        from edgemlic.metrics import multilabel_metrics

        ours = multilabel_metrics(safe, targets, thresholds)
        theirs = multilabel_metrics(reference, targets, thresholds)
        figures = {
            "micro_f1": ours["micro_f1"],
            "jaccard": ours["jaccard"],
            "mAP": ours["mAP"],
            "delta_micro_f1": ours["micro_f1"] - theirs["micro_f1"],
            "delta_jaccard": ours["jaccard"] - theirs["jaccard"],
            "delta_mAP": None
            if ours["mAP"] is None or theirs["mAP"] is None
            else ours["mAP"] - theirs["mAP"],
        }
    comparison = Comparison(
        images=len(reference),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        flip_rate=float(flips.mean()),
        budget=budget,
        **figures,
    )
    if budget is None:
        return comparison
    failures = [] if finite else ["non-finite probabilities (NaN or infinity) in the output"]
    for limit_name, metric in _LIMITED.items():
        limit, value = getattr(budget, limit_name), getattr(comparison, metric)
        if limit is None:
            continue
        if value is None:
            raise EdgemlicError(f"the budget limits {limit_name}, which needs the true labels (targets)")
        if abs(value) > limit:
            shown = f"|{metric}|" if metric.startswith("delta") else metric
            failures.append(f"{shown} {abs(value):.6g} exceeds {limit_name} {limit:g}")
    return dataclasses.replace(comparison, failures=tuple(failures))
