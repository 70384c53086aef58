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

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemlic import checks
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.compare import BUDGETS, Budget, Comparison, compare_scores
from edgemlic.errors import EdgemlicError
from edgemlic.runtime.backend import Backend, BackendOptions
from edgemlic.runtime.loader import Variant, expand_variants, parse_onnx_variant

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


def lineage(card: ModelCard, checkpoint_sha256: str | None = None) -> frozenset[str]:
    """The SHA-256s of the checkpoints an artifact is known to come from: any its card records and, for a
    checkpoint, its own file's (`checkpoint_sha256`, as its backend or `load_checkpoint` learned it)."""
    return frozenset(h for h in (card.provenance.get("checkpoint_sha256"), checkpoint_sha256) if h)


def descends(
    reference: str | Path,
    reference_lineage: frozenset[str],
    artifact: str | Path,
    artifact_lineage: frozenset[str],
    cross_model: bool = False,
) -> bool:
    """Whether `artifact` comes from the same checkpoint as the reference: their lineages meet.

    When it does not, that is a one-line EdgemlicError unless `cross_model` asks to compare two models,
    in which case the answer is False and the caller labels the comparison.
    """
    if artifact_lineage & reference_lineage:
        return True
    if cross_model:
        return False
    theirs = ", ".join(sorted(h[:12] for h in reference_lineage)) or "none recorded"
    if not artifact_lineage:
        raise EdgemlicError(
            f"{artifact}: its card records no checkpoint (provenance.checkpoint_sha256), so it cannot be "
            f"shown to come from the reference {reference} (checkpoint {theirs}); export it with `edgemlic "
            "export`, or pass --cross-model to compare two models"
        )
    raise EdgemlicError(
        f"{artifact}: exported from checkpoint {', '.join(sorted(h[:12] for h in artifact_lineage))}, not "
        f"from the reference {reference} (checkpoint {theirs}); compare it with the checkpoint it came "
        "from, or pass --cross-model to compare two models"
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

    checks.at_least("batch_size", batch_size, 1)
    variants = _variants(reference, artifacts, onnx_variants)
    with contextlib.ExitStack() as open_backends:
        backends = _open_comparable(variants, device, open_backends)
        card = backends[0].card
        related = _related(variants, backends, cross_model)
        data = load_coco_split(Path(coco_root), split, card.classes)
        sources = [sample.path for sample in data.samples]
        outputs = _score_all(backends, sources, card.preprocessing, batch_size)
    budgets = {**DEFAULT_BUDGETS, **(budgets or {})}
    targets = np.stack([sample.target for sample in data.samples])
    thresholds = card.thresholds(threshold)
    rows = [
        ParityRow(
            str(variant.artifact),
            backend.name,
            backend.precision,
            compare_scores(outputs[0], scores, thresholds, budget, targets),
            cross_model=not same,
        )
        for variant, backend, scores, budget, same in zip(
            variants,
            backends,
            outputs,
            (None, *(budgets[b.precision] for b in backends[1:])),
            related,
            strict=True,
        )
    ]
    return ParityReport(
        coco_root=str(coco_root),
        split=split,
        images=len(data.samples),
        classes=card.classes,
        thresholds=tuple(float(t) for t in thresholds),
        reference=rows[0],
        artifacts=tuple(rows[1:]),
    )


def _variants(
    reference: str | Path, artifacts: Sequence[str | Path], onnx_variants: Sequence[str]
) -> list[Variant]:
    """The reference, then each artifact (each .onnx once per entry of `onnx_variants`); missing files,
    unknown kinds and unknown variants are refused before anything is opened."""
    if not artifacts:
        raise EdgemlicError("parity: give at least one artifact to compare with the reference")
    if not onnx_variants:
        raise EdgemlicError("parity: give at least one .onnx backend (onnxruntime, openvino)")
    onnx_options = [parse_onnx_variant(text) for text in onnx_variants]
    return expand_variants([reference]) + expand_variants(artifacts, {"onnx": onnx_options})


def _open_comparable(variants: list[Variant], device: str, stack: contextlib.ExitStack) -> list[Backend]:
    """Every variant's backend, open on `stack`; each artifact is refused as soon as it is open if its
    classes or preprocessing differ from the reference's (the first)."""
    backends: list[Backend] = []
    for variant in variants:
        backends.append(stack.enter_context(_open_artifact(variant.artifact, device, variant.options)))
        check_same_model_inputs(backends[0].card, backends[-1].card, variant.artifact)
    return backends


def _related(variants: list[Variant], backends: list[Backend], cross_model: bool) -> list[bool]:
    """Whether each backend comes from the reference's checkpoint (the reference does), from what opening
    them learned; an artifact that does not is refused unless `cross_model`."""
    reference, *artifacts = (lineage(b.card, b.checkpoint_sha256) for b in backends)
    return [True] + [
        descends(variants[0].artifact, reference, variant.artifact, hashes, cross_model)
        for variant, hashes in zip(variants[1:], artifacts, strict=True)
    ]


def _score_all(
    backends: list[Backend], sources: list[Path], preprocessing: Preprocessing, batch_size: int
) -> list[np.ndarray]:
    """Every backend's scores on the same images. Each image is resized and cropped once; float graphs get
    it normalized, uint8 graphs as it is."""
    from edgemlic.images import iter_preprocessed, normalize

    outputs: list[list[np.ndarray]] = [[] for _ in backends]
    crops = dataclasses.replace(preprocessing, input_dtype="uint8", input_layout="NHWC")
    for pixels in iter_preprocessed(sources, crops, batch_size):
        normalized = normalize(pixels, preprocessing)
        for scores, backend in zip(outputs, backends, strict=True):
            uint8_input = backend.card.preprocessing.input_dtype == "uint8"
            scores.append(backend.infer(pixels if uint8_input else normalized))
    return [np.concatenate(chunks) for chunks in outputs]


def _open_artifact(path: Path, device: str, options: BackendOptions | None) -> Backend:
    """The artifact's backend; any reason it cannot run here becomes one line naming the file."""
    from edgemlic.runtime import load_backend

    try:
        return load_backend(path, device, options=options)
    except EdgemlicError as e:
        message = str(e)
        raise EdgemlicError(
            message if str(path) in message else f"{path}: cannot run here: {message}"
        ) from None
