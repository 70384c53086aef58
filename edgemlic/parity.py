"""Parity: do exported artifacts decide like the PyTorch checkpoint they came from, on real images?

Every image of a split that holds one of the card's classes is preprocessed once, and each batch goes
through the checkpoint (the reference) and every artifact. Per artifact the report gives its own
micro-F1, Jaccard and mAP, their differences from the reference, the label flip rate (the share of
image x class decisions that differ from the reference's) and the largest and mean absolute
probability difference. Each artifact is judged against the budget of its precision; the verdict is
explicit (`passed`), so `edgemlic parity` can gate a deployment.

Decisions use the checkpoint card's thresholds (or one global override) for every backend: parity
measures the numerics of the artifact, not a difference in threshold settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic.card import ModelCard
from edgemlic.errors import EdgemlicError


@dataclass(frozen=True)
class Budget:
    """The most an artifact may differ from the reference; None means not limited."""

    max_delta_f1: float | None = None
    """|micro-F1 of the artifact - micro-F1 of PyTorch|"""
    max_delta_jaccard: float | None = None
    max_flip_rate: float | None = None
    max_abs_diff: float | None = None
    """Largest absolute probability difference over every image and class."""

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


DEFAULT_BUDGETS: dict[str, Budget] = {
    "fp32": Budget(max_delta_f1=0.0, max_delta_jaccard=0.0, max_flip_rate=0.0, max_abs_diff=1e-4),
    "fp16": Budget(max_delta_f1=0.005, max_delta_jaccard=0.005, max_flip_rate=0.005, max_abs_diff=0.02),
    "int8": Budget(max_delta_f1=0.02, max_delta_jaccard=0.02, max_flip_rate=0.02, max_abs_diff=None),
}
"""Default budgets by precision.

| precision | abs delta F1 | abs delta Jaccard | flip rate | max abs prob diff | why                        |
|-----------|--------------|-------------------|-----------|-------------------|----------------------------|
| fp32      | 0            | 0                 | 0         | 1e-4              | same graph: only rounding  |
| fp16      | 0.005        | 0.005             | 0.005     | 0.02              | 10-bit mantissa, rare flip |
| int8      | 0.02         | 0.02              | 0.02      | none              | 8-bit steps move scores    |

FP32 re-orders float operations only (the export gate accepts 1e-4 too). FP16 keeps about three
decimal digits, so scores move by a few 1e-3 (0.02 allows a tail on a large split) and only decisions
sitting right at a threshold flip. INT8 moves single probabilities by several hundredths, so only
its effect on the decisions is limited; a badly calibrated graph shows up as flips and lost F1.
"""

BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(Budget))
_CHECKED_METRIC = {
    "max_delta_f1": "delta_micro_f1",
    "max_delta_jaccard": "delta_jaccard",
    "max_flip_rate": "flip_rate",
    "max_abs_diff": "max_abs_diff",
}


def budgets_with_overrides(**limits: float | None) -> dict[str, Budget]:
    """The default budgets, with every limit given (not None) replacing that limit for all precisions."""
    unknown = sorted(set(limits) - set(BUDGET_FIELDS))
    if unknown:
        raise EdgemlicError(f"unknown parity budget limits {unknown}; known: {', '.join(BUDGET_FIELDS)}")
    for name, value in limits.items():
        if value is not None and not value >= 0:
            raise EdgemlicError(f"parity budget {name} = {value}: a limit must be 0 or more")
    given = {name: value for name, value in limits.items() if value is not None}
    return {precision: dataclasses.replace(budget, **given) for precision, budget in DEFAULT_BUDGETS.items()}


@dataclass(frozen=True)
class ParityRow:
    """One backend's scores on the split and, for an artifact, how far they are from the reference."""

    artifact: str
    backend: str
    precision: str
    micro_f1: float
    jaccard: float
    mAP: float | None
    delta_micro_f1: float
    delta_jaccard: float
    delta_mAP: float | None
    flip_rate: float
    max_abs_diff: float
    mean_abs_diff: float
    budget: Budget | None
    """None for the reference row."""
    failures: tuple[str, ...]
    """One line per exceeded limit, e.g. "flip_rate 0.031 exceeds max_flip_rate 0.02"."""

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["budget"] = self.budget.to_dict() if self.budget else None
        record["failures"] = list(self.failures)
        record["passed"] = self.passed
        return record


@dataclass(frozen=True)
class ParityReport:
    checkpoint: str
    coco_root: str
    split: str
    images: int
    classes: tuple[str, ...]
    thresholds: tuple[float, ...]
    reference: ParityRow
    artifacts: tuple[ParityRow, ...]

    @property
    def passed(self) -> bool:
        """True when every artifact is within its budget."""
        return all(row.passed for row in self.artifacts)

    def failures(self) -> list[str]:
        """ "ARTIFACT: METRIC VALUE exceeds LIMIT BUDGET", one line per exceeded limit of every artifact."""
        return [f"{row.artifact}: {failure}" for row in self.artifacts for failure in row.failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "coco_root": self.coco_root,
            "split": self.split,
            "images": self.images,
            "classes": list(self.classes),
            "thresholds": list(self.thresholds),
            "passed": self.passed,
            "reference": self.reference.to_dict(),
            "artifacts": [row.to_dict() for row in self.artifacts],
        }


def check_same_model_inputs(reference: ModelCard, card: ModelCard, artifact: str | Path) -> None:
    """Refuse an artifact whose classes or preprocessing differ from the checkpoint's, naming the field."""
    if card.classes != reference.classes:
        raise EdgemlicError(
            f"{artifact}: classes differ from the checkpoint's ({list(card.classes)} vs "
            f"{list(reference.classes)}); export the artifact from this checkpoint"
        )
    for field in dataclasses.fields(reference.preprocessing):
        theirs = getattr(card.preprocessing, field.name)
        ours = getattr(reference.preprocessing, field.name)
        if theirs != ours:
            raise EdgemlicError(
                f"{artifact}: preprocessing.{field.name} is {theirs}, the checkpoint's is {ours}; "
                "export the artifact from this checkpoint"
            )


def run_parity(
    checkpoint: str | Path,
    artifacts: Sequence[str | Path],
    coco_root: str | Path,
    split: str = "val2017",
    budgets: Mapping[str, Budget] | None = None,
    threshold: float | None = None,
    device: str = "cpu",
    batch_size: int = 32,
) -> ParityReport:
    """Compare each artifact with the PyTorch checkpoint on every image of `split` with the card's classes.

    `budgets` maps a precision to its Budget (missing precisions take DEFAULT_BUDGETS). TensorRT engines
    always run on the GPU, whatever `device` says. A budget overrun is a failed verdict, not an error;
    an artifact that cannot be compared (missing, unreadable, another model) raises EdgemlicError.
    """
    from edgemlic.data.coco import load_coco_split
    from edgemlic.images import iter_preprocessed
    from edgemlic.runtime.torch_backend import TorchBackend

    if not artifacts:
        raise EdgemlicError("parity: give at least one artifact to compare with the checkpoint")
    if batch_size < 1:
        raise EdgemlicError(f"parity: batch size {batch_size} must be at least 1")
    budgets = {**DEFAULT_BUDGETS, **(budgets or {})}
    reference = TorchBackend(checkpoint, device)
    backends = []
    try:
        for artifact in artifacts:
            backend = _open_artifact(Path(artifact), device)
            backends.append(backend)
            check_same_model_inputs(reference.card, backend.card, artifact)
        card = reference.card
        data = load_coco_split(Path(coco_root), split, card.classes)
        sources = [sample.path for sample in data.samples]
        outputs: list[list[np.ndarray]] = [[] for _ in range(len(backends) + 1)]
        for batch in iter_preprocessed(sources, card.preprocessing, batch_size):
            for scores, backend in zip(outputs, [reference, *backends], strict=True):
                scores.append(backend.infer(batch))
    finally:
        for backend in [reference, *backends]:
            backend.close()

    targets = np.stack([sample.target for sample in data.samples])
    thresholds = card.thresholds(threshold)
    reference_scores, *artifact_scores = (np.concatenate(chunks) for chunks in outputs)
    reference_row = _row(
        str(checkpoint), reference, reference_scores, reference_scores, targets, thresholds, None
    )
    rows = [
        _row(
            str(artifact), backend, scores, reference_scores, targets, thresholds, budgets[backend.precision]
        )
        for artifact, backend, scores in zip(artifacts, backends, artifact_scores, strict=True)
    ]
    return ParityReport(
        checkpoint=str(checkpoint),
        coco_root=str(coco_root),
        split=split,
        images=len(sources),
        classes=card.classes,
        thresholds=tuple(float(t) for t in thresholds),
        reference=reference_row,
        artifacts=tuple(rows),
    )


def _open_artifact(path: Path, device: str):
    """The artifact's backend; any reason it cannot run here becomes one line naming the file."""
    from edgemlic.runtime import load_backend

    if path.suffix == ".engine" and device == "cpu":
        device = "auto"  # an engine has no CPU form; it runs on the GPU or not at all
    try:
        return load_backend(path, device)
    except EdgemlicError as e:
        message = str(e)
        raise EdgemlicError(
            message if str(path) in message else f"{path}: cannot run here: {message}"
        ) from None


def _row(
    artifact: str,
    backend: Any,
    scores: np.ndarray,
    reference_scores: np.ndarray,
    targets: np.ndarray,
    thresholds: np.ndarray,
    budget: Budget | None,
) -> ParityRow:
    from edgemlic.metrics import multilabel_metrics

    finite = bool(np.isfinite(scores).all())
    # Metrics of NaN scores are meaningless; scoring them as all-negative keeps the row printable while
    # the failure below says what happened.
    safe = scores if finite else np.nan_to_num(scores, nan=0.0, posinf=1.0, neginf=0.0)
    ours = multilabel_metrics(safe, targets, thresholds)
    ref = multilabel_metrics(reference_scores, targets, thresholds)
    diff = np.abs(safe.astype(np.float64) - reference_scores.astype(np.float64))
    flips = (safe >= thresholds) != (reference_scores >= thresholds)
    row = ParityRow(
        artifact=artifact,
        backend=backend.name,
        precision=backend.precision,
        micro_f1=ours["micro_f1"],
        jaccard=ours["jaccard"],
        mAP=ours["mAP"],
        delta_micro_f1=ours["micro_f1"] - ref["micro_f1"],
        delta_jaccard=ours["jaccard"] - ref["jaccard"],
        delta_mAP=None if ours["mAP"] is None or ref["mAP"] is None else ours["mAP"] - ref["mAP"],
        flip_rate=float(flips.mean()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        budget=budget,
        failures=(),
    )
    if budget is None:
        return row
    failures = [] if finite else ["non-finite probabilities (NaN or infinity) in the output"]
    for limit_name, metric in _CHECKED_METRIC.items():
        limit = getattr(budget, limit_name)
        value = abs(getattr(row, metric))
        if limit is not None and value > limit:
            shown = f"|{metric}|" if metric.startswith("delta") else metric
            failures.append(f"{shown} {value:.6g} exceeds {limit_name} {limit:g}")
    return dataclasses.replace(row, failures=tuple(failures))
