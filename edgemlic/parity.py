"""Parity: do exported artifacts decide like the model they came from, on real images?

The reference is usually the PyTorch checkpoint, but any artifact can be (model.fp32.onnx on a device
without torch). Every image of a split that holds one of the card's classes is preprocessed once, and
each batch goes through the reference and every artifact. Per artifact the report gives its own
micro-F1, Jaccard and mAP, their differences from the reference, the label flip rate (the share of
image x class decisions that differ from the reference's) and the largest and mean absolute
probability difference. Each artifact is judged against the budget of its precision; the verdict is
explicit (`passed`), so `edgemlic parity` can gate a deployment.

Decisions use the reference card's thresholds (or one global override) for every backend: parity
measures the numerics of the artifact, not a difference in threshold settings.

Parity also checks what it compares: every artifact must descend from the reference, i.e. record in its
card the SHA-256 of the checkpoint the reference is (or was exported from). A model fine-tuned a few
steps further decides within INT8's tolerance of the original, so the budgets alone cannot tell it
from a faithful export. `cross_model=True` compares such artifacts anyway and labels them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic import checks
from edgemlic.artifacts import artifact_kind, checkpoint_file
from edgemlic.card import ModelCard
from edgemlic.compare import BUDGETS, Budget, Comparison, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.runtime.loader import parse_onnx_variant

DEFAULT_BUDGETS: dict[str, Budget] = BUDGETS["parity"]
"""Default budgets by precision (see edgemlic.compare.BUDGETS for the table and the reasons)."""
BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(Budget))


def budgets_with_overrides(**limits: float | None) -> dict[str, Budget]:
    """The default budgets, with every limit given (not None) replacing that limit for all precisions."""
    unknown = sorted(set(limits) - set(BUDGET_FIELDS))
    if unknown:
        raise EdgemlicError(f"unknown parity budget limits {unknown}; known: {', '.join(BUDGET_FIELDS)}")
    given = {name: value for name, value in limits.items() if value is not None}
    return {precision: dataclasses.replace(budget, **given) for precision, budget in DEFAULT_BUDGETS.items()}


@dataclass(frozen=True)
class ParityRow:
    """One backend's scores on the split and, for an artifact, how far they are from the reference."""

    artifact: str
    backend: str
    precision: str
    comparison: Comparison
    """Against the reference; the reference row compares with itself and has no budget."""
    cross_model: bool = False
    """True when the artifact does not descend from the reference (compared with `cross_model=True`)."""

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "backend": self.backend,
            "precision": self.precision,
            "cross_model": self.cross_model,
            **self.comparison.to_dict(),
        }


@dataclass(frozen=True)
class ParityReport:
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

    @property
    def cross_model(self) -> bool:
        """True when some artifact does not descend from the reference."""
        return any(row.cross_model for row in self.artifacts)

    def failures(self) -> list[str]:
        """ "ARTIFACT: METRIC VALUE exceeds LIMIT BUDGET", one line per exceeded limit of every artifact."""
        return [f"{row.artifact}: {failure}" for row in self.artifacts for failure in row.comparison.failures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.reference.artifact,  # the key predates non-checkpoint references
            "coco_root": self.coco_root,
            "split": self.split,
            "images": self.images,
            "classes": list(self.classes),
            "thresholds": list(self.thresholds),
            "passed": self.passed,
            "cross_model": self.cross_model,
            "reference": self.reference.to_dict(),
            "artifacts": [row.to_dict() for row in self.artifacts],
        }


INPUT_DELIVERY = ("input_dtype", "input_layout")
"""How the pixels reach a graph (normalized float32 NCHW, or uint8 NHWC normalized inside it): artifacts
that differ only in these see the same pixels, and parity feeds each the form it takes."""


def check_same_model_inputs(reference: ModelCard, card: ModelCard, artifact: str | Path) -> None:
    """Refuse an artifact whose classes or preprocessing differ from the reference's, naming the field."""
    if card.classes != reference.classes:
        raise EdgemlicError(
            f"{artifact}: classes differ from the reference's ({list(card.classes)} vs "
            f"{list(reference.classes)}); compare artifacts exported from the same checkpoint"
        )
    for field in dataclasses.fields(reference.preprocessing):
        if field.name in INPUT_DELIVERY:
            continue
        theirs = getattr(card.preprocessing, field.name)
        ours = getattr(reference.preprocessing, field.name)
        if theirs != ours:
            raise EdgemlicError(
                f"{artifact}: preprocessing.{field.name} is {theirs}, the reference's is {ours}; "
                "compare artifacts exported from the same checkpoint"
            )


def checkpoint_hashes(path: str | Path, card: ModelCard) -> frozenset[str]:
    """The SHA-256s of the checkpoints `path` is known to come from: a checkpoint's own file hash and any
    checkpoint its card names, an exported artifact's recorded `checkpoint_sha256`."""
    from edgemlic.io import sha256_file

    hashes = {card.provenance.get("checkpoint_sha256")}
    if artifact_kind(path) == "checkpoint":
        hashes.add(sha256_file(checkpoint_file(path)))
    return frozenset(h for h in hashes if h)


def descends(
    reference: str | Path,
    reference_hashes: frozenset[str],
    artifact: str | Path,
    card: ModelCard,
    cross_model: bool = False,
) -> bool:
    """Whether `artifact` (with `card`) comes from the same checkpoint as the reference.

    When it does not, that is a one-line EdgemlicError unless `cross_model` asks to compare two models,
    in which case the answer is False and the caller labels the comparison.
    """
    hashes = checkpoint_hashes(artifact, card)
    if hashes & reference_hashes:
        return True
    if cross_model:
        return False
    theirs = ", ".join(sorted(h[:12] for h in reference_hashes)) or "none recorded"
    if not hashes:
        raise EdgemlicError(
            f"{artifact}: its card records no checkpoint (provenance.checkpoint_sha256), so it cannot be "
            f"shown to come from the reference {reference} (checkpoint {theirs}); export it with `edgemlic "
            "export`, or pass --cross-model to compare two models"
        )
    raise EdgemlicError(
        f"{artifact}: exported from checkpoint {', '.join(sorted(h[:12] for h in hashes))}, not from the "
        f"reference {reference} (checkpoint {theirs}); compare it with the checkpoint it came from, or "
        "pass --cross-model to compare two models"
    )


def run_parity(
    reference: str | Path,
    artifacts: Sequence[str | Path],
    coco_root: str | Path,
    split: str = "val2017",
    budgets: Mapping[str, Budget] | None = None,
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = 32,
    onnx_variants: Sequence[str] = ("onnxruntime",),
    cross_model: bool = False,
) -> ParityReport:
    """Compare each artifact with the reference on every image of `split` with the card's classes.

    `reference` is a checkpoint or any other artifact; `budgets` maps a precision to its Budget
    (missing precisions take DEFAULT_BUDGETS). A budget overrun is a failed verdict, not an error; an
    artifact that cannot be compared (missing, unreadable, other classes or preprocessing, or not
    exported from the reference's checkpoint unless `cross_model`) raises EdgemlicError. Each .onnx
    artifact is compared once per entry of `onnx_variants` ("onnxruntime", "openvino", ...).
    """
    from edgemlic.data.coco import load_coco_split
    from edgemlic.images import iter_preprocessed, normalize

    if not artifacts:
        raise EdgemlicError("parity: give at least one artifact to compare with the reference")
    checks.at_least("batch_size", batch_size, 1)
    budgets = {**DEFAULT_BUDGETS, **(budgets or {})}
    if not onnx_variants:
        raise EdgemlicError("parity: give at least one .onnx backend (onnxruntime, openvino)")
    variants = [parse_onnx_variant(v) for v in onnx_variants]
    runs = [(reference, {})] + [
        (artifact, options)
        for artifact in artifacts
        for options in (variants if artifact_kind(artifact) == "onnx" else [{}])
    ]
    backends = []
    try:
        for artifact, options in runs:
            backends.append(_open_artifact(Path(artifact), device, options))
            check_same_model_inputs(backends[0].card, backends[-1].card, artifact)
        card = backends[0].card
        lineage = checkpoint_hashes(reference, card)
        related = [True] + [
            descends(reference, lineage, artifact, backend.card, cross_model)
            for (artifact, _), backend in zip(runs[1:], backends[1:], strict=True)
        ]
        data = load_coco_split(Path(coco_root), split, card.classes)
        sources = [sample.path for sample in data.samples]
        outputs: list[list[np.ndarray]] = [[] for _ in backends]
        # Each image is resized and cropped once; float graphs get it normalized, uint8 graphs as it is.
        crops = dataclasses.replace(card.preprocessing, input_dtype="uint8", input_layout="NHWC")
        for pixels in iter_preprocessed(sources, crops, batch_size):
            normalized = normalize(pixels, card.preprocessing)
            for scores, backend in zip(outputs, backends, strict=True):
                uint8_input = backend.card.preprocessing.input_dtype == "uint8"
                scores.append(backend.infer(pixels if uint8_input else normalized))
    finally:
        for backend in backends:
            backend.close()

    targets = np.stack([sample.target for sample in data.samples])
    thresholds = card.thresholds(threshold)
    reference_scores, *artifact_scores = (np.concatenate(chunks) for chunks in outputs)
    rows = [
        ParityRow(
            str(artifact),
            backend.name,
            backend.precision,
            compare_scores(reference_scores, scores, thresholds, budget, targets),
            cross_model=not same,
        )
        for (artifact, _), backend, scores, budget, same in zip(
            runs,
            backends,
            (reference_scores, *artifact_scores),
            (None, *(budgets[b.precision] for b in backends[1:])),
            related,
            strict=True,
        )
    ]
    return ParityReport(
        coco_root=str(coco_root),
        split=split,
        images=len(sources),
        classes=card.classes,
        thresholds=tuple(float(t) for t in thresholds),
        reference=rows[0],
        artifacts=tuple(rows[1:]),
    )


def _open_artifact(path: Path, device: str, options: dict[str, Any]):
    """The artifact's backend; any reason it cannot run here becomes one line naming the file."""
    from edgemlic.runtime import load_backend

    try:
        return load_backend(path, device, **options)
    except EdgemlicError as e:
        message = str(e)
        raise EdgemlicError(
            message if str(path) in message else f"{path}: cannot run here: {message}"
        ) from None
