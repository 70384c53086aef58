"""One self-contained HTML page about a training run: curves, data, metrics, thresholds and mistakes.

Every figure and thumbnail is embedded as a base64 data URI and the CSS is inline, so the file opens
in a browser from disk, can be mailed or attached to a CI run, and loads nothing from anywhere.
Built with f-strings and `html.escape` (no template engine dependency).

The data statistics are those of the evaluated split (reading a large training annotation file just
for counts would dominate the run); the training split's size comes from the model card.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import tempfile
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from edgemlic.errors import EdgemlicError
from edgemlic.formatting import number
from edgemlic.io import write_text

THUMBNAIL_SIDE = 160
SUMMARY = (
    ("micro_precision", "micro precision"),
    ("micro_recall", "micro recall"),
    ("micro_f1", "micro-F1"),
    ("jaccard", "Jaccard"),
    ("macro_f1", "macro-F1"),
    ("mAP", "mAP"),
    ("hamming_loss", "Hamming loss"),
)

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d232b;
       background: #f6f7f9; }
header { background: #243447; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; opacity: .85; }
nav { padding: 8px 32px; background: #e8ebf0; position: sticky; top: 0; }
nav a { margin-right: 16px; color: #243447; text-decoration: none; font-weight: 600; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { background: #fff; border-radius: 6px; padding: 12px 20px 18px; margin: 16px 0;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 18px; margin: 6px 0 10px; }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e3e6ea; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f2f5; }
img.figure { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.note { color: #5b6673; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; }
figure { margin: 0; background: #fafbfc; border: 1px solid #e3e6ea; border-radius: 4px; padding: 6px; }
figure img { width: 100%; height: 150px; object-fit: contain; background: #222; }
figcaption { font-size: 12px; margin-top: 4px; word-break: break-word; }
.ok { color: #1b7a2f; } .fp { color: #c0392b; font-weight: 600; }
.fn { color: #b9770e; text-decoration: line-through; }
"""


@dataclass(frozen=True)
class Report:
    """Where the page went, which checkpoint it shows, and what the user should know about that choice."""

    path: Path
    checkpoint: Path
    notes: tuple[str, ...]


def build_report(
    run_dir: str | Path,
    coco_root: str | Path | None = None,
    split: str | None = None,
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    max_images: int = 24,
    batch_size: int = 32,
    device: str = "auto",
) -> Report:
    """Evaluate the run's checkpoint and write the report (default RUN_DIR/report.html).

    The checkpoint defaults to best.tuned.pt when `thresholds tune` wrote one after best.pt, else best.pt.
    The dataset root and split default to those in the run's config.json.
    """
    from edgemlic.evaluate import evaluate_artifact

    run_dir = Path(run_dir)
    history = read_history(run_dir)
    config = _read_config(run_dir)
    coco_root = Path(coco_root) if coco_root is not None else dataset_root(run_dir, config)
    split = split or config.get("val_split", "val2017")
    checkpoint, notes = _report_checkpoint(run_dir, checkpoint)
    evaluation = evaluate_artifact(checkpoint, coco_root, split, batch_size=batch_size, device=device)
    sections = _sections(evaluation, history, config.get("select_by"), notes, max_images)
    card = evaluation.card
    subtitle = (
        f"{escape(card.architecture)}, {card.num_classes} classes, input {card.preprocessing.input_size} px, "
        f"{escape(str(checkpoint))} on {escape(split)} ({evaluation.report['num_images']} images)"
    )
    target = Path(out) if out is not None else run_dir / "report.html"
    write_text(target, _page(run_dir, subtitle, sections))
    return Report(target, checkpoint, notes)


def _sections(
    evaluation, history: list[dict], select_by: str | None, notes: tuple[str, ...], max_images: int
) -> list[tuple[str, str, str]]:
    """The page's sections in reading order, each as (anchor, title, HTML)."""
    from edgemlic.data.stats import split_stats

    card, data, report = evaluation.card, evaluation.data, evaluation.report
    stats = split_stats(data)
    figures = _figures(history, evaluation)
    thresholds = card.thresholds()
    return [
        ("training", "Training", _training_section(history, figures["curves"], select_by)),
        ("data", "Data", _data_section(stats, card.training_data)),
        ("metrics", "Metrics", _metrics_section(report, thresholds)),
        ("sweep", "Threshold sweep", _sweep_section(report["sweep"], figures["threshold_sweep"])),
        ("confusion", "Confusion and precision-recall", _confusion_section(figures)),
        ("thresholds", "Per-class thresholds", _thresholds_section(card, notes)),
        (
            "images",
            "Validation images, worst first",
            _images_section(data.samples, evaluation, thresholds, max_images),
        ),
    ]


def _figures(history: list[dict], evaluation) -> dict[str, str]:
    """Every figure as a data URI, by name: the training curves and the evaluation's plots."""
    from edgemlic.plots import save_evaluation_plots, save_training_curves

    with tempfile.TemporaryDirectory(prefix="edgemlic-report-") as tmp:
        save_training_curves(history, Path(tmp) / "curves.png")
        figures = {"curves": _data_uri(Path(tmp) / "curves.png")}
        for path in save_evaluation_plots(evaluation, tmp):
            figures[path.stem] = _data_uri(path)
    return figures


def _page(run_dir: Path, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole HTML document: header, a navigation bar to the sections, the sections, inline CSS."""
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>' for key, title, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>edgemlic report: {escape(run_dir.name)}</title><style>{CSS}</style></head>"
        f"<body><header><h1>Training report: {escape(str(run_dir))}</h1><p>{subtitle}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )


def dataset_root(run_dir: Path, config: dict) -> Path:
    """The dataset root the run's config.json names, wherever the report is made from.

    New runs store it absolute. Older ones stored it as given, relative to the folder training ran in,
    which is usually the run folder's parent or one above it (the demo: `demo/data` beside
    `demo/run-...`), so a relative root is looked for from the current folder and then from each folder
    above the run.
    """
    config_file = run_dir / "config.json"
    if "coco_root" not in config:
        raise EdgemlicError(f"{run_dir}: no config.json names the dataset; pass --coco-root")
    named = Path(config["coco_root"])
    if named.is_absolute():
        candidates, where = [named], ""
    else:
        candidates = [named, *(folder / named for folder in run_dir.resolve().parents)]
        where = " from the current folder or any folder above the run"
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise EdgemlicError(
        f"{config_file} names the dataset root {named}, which is not there{where}; "
        "pass --coco-root ROOT to report on the data where it is now"
    )


def _report_checkpoint(run_dir: Path, given: str | Path | None) -> tuple[Path, tuple[str, ...]]:
    """The checkpoint to report on and, when a tuned one is beside best.pt, what was done with it."""
    from edgemlic.artifacts import checkpoint_file

    if given is not None:
        return checkpoint_file(given), ()
    best = checkpoint_file(run_dir)
    tuned = best.with_name(f"{best.stem}.tuned.pt")  # `thresholds tune`'s default name
    if not tuned.is_file():
        return best, ()
    if tuned.stat().st_mtime < best.stat().st_mtime:
        return best, (
            f"{tuned.name} is older than {best.name} (tuned for an earlier best), so {best.name} is shown; "
            f"run `edgemlic thresholds tune {run_dir}` again to tune the current one",
        )
    return tuned, (
        f"{tuned.name} (the per-class thresholds `edgemlic thresholds tune` wrote beside {best.name}) "
        "is shown; "
        f"pass --checkpoint {best} for the global threshold",
    )


def read_history(run_dir: Path) -> list[dict]:
    """The validation log of a run (metrics.csv) as rows of floats; a missing value reads as NaN."""
    path = run_dir / "metrics.csv"
    if not run_dir.is_dir():
        raise EdgemlicError(f"{run_dir}: run directory not found")
    if not path.is_file():
        raise EdgemlicError(f"{run_dir}: no metrics.csv; give the folder `edgemlic train --out` wrote")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    needed = {"step", "train_loss", "val_loss", "val_micro_f1"}
    if not rows or not needed <= set(rows[0]):
        raise EdgemlicError(
            f"{path}: no validation rows with {', '.join(sorted(needed))}; is the run started?"
        )
    try:
        return [
            {key: float(value) if value not in ("", None) else math.nan for key, value in row.items()}
            for row in rows
        ]
    except ValueError as e:
        raise EdgemlicError(f"{path}: unreadable number ({e})") from None


def _read_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise EdgemlicError(f"{path}: not valid JSON ({e})") from None
    return config if isinstance(config, dict) else {}


def _data_uri(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _img(uri: str, alt: str) -> str:
    return f'<img class="figure" src="{uri}" alt="{escape(alt)}">'


def _cell(value) -> str:
    return number(value, missing="–") if isinstance(value, float | None) else escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _training_section(history: list[dict], curves: str, select_by: str | None) -> str:
    """The best validation by the measure that chose best.pt (before `--select-by`, runs used the loss)."""
    by_loss = select_by in (None, "loss")
    measure, worst = ("val_loss", math.inf) if by_loss else ("val_micro_f1", -math.inf)

    def rank(row: dict) -> float:
        value = row.get(measure, math.nan)
        return worst if math.isnan(value) else (-value if by_loss else value)

    best = max(history, key=rank)
    last = history[-1]
    keys = [
        k
        for k in ("step", "epoch", "train_loss", "val_loss", "val_micro_f1", "val_jaccard", "val_mAP")
        if k in last
    ]
    label = "lowest val loss" if by_loss else "highest val micro-F1"
    rows = [
        [name] + [_count(row[k]) if k in ("step", "epoch") else row[k] for k in keys]
        for name, row in ((label, best), ("last", last))
    ]
    return (
        _img(curves, "training curves")
        + _table(["validation"] + keys, rows)
        + f'<p class="note">{len(history)} validations, from metrics.csv.</p>'
    )


def _count(value: float) -> int | str:
    """A step or an epoch as people write it: 19, not 19.0000 (an epoch part-way through keeps 2 places)."""
    if math.isnan(value) or not value.is_integer():
        return "–" if math.isnan(value) else f"{value:.2f}"
    return int(value)


def _data_section(stats: dict, training_data: dict) -> str:
    rows = [[name, count] for name, count in stats["class_counts"].items()]
    histogram = ", ".join(f"{k} labels: {n}" for k, n in stats["labels_per_image_histogram"].items())
    trained = ", ".join(f"{escape(str(k))}: {escape(str(v))}" for k, v in training_data.items())
    return (
        f"<p>{escape(stats['split'])}: {stats['num_images']} images, "
        f"{stats['mean_labels_per_image']:.3f} labels per image ({escape(histogram)}).</p>"
        + _table(["class", "images"], rows)
        + (f'<p class="note">Training data (model card): {trained}.</p>' if trained else "")
    )


def _metrics_section(report: dict, thresholds: np.ndarray) -> str:
    summary = _table([label for _, label in SUMMARY], [[report[key] for key, _ in SUMMARY]])
    rows = [
        [
            row["class"],
            row["support"],
            float(t),
            row["precision"],
            row["recall"],
            row["f1"],
            row["ap"],
            row["tp"],
            row["fp"],
            row["fn"],
            row["tn"],
        ]
        for row, t in zip(report["per_class"], thresholds, strict=True)
    ]
    header = ["class", "support", "threshold", "precision", "recall", "F1", "AP", "TP", "FP", "FN", "TN"]
    return summary + _table(header, rows)


def _sweep_section(sweep: list[dict], figure: str) -> str:
    keys = ["micro_precision", "micro_recall", "micro_f1", "jaccard", "macro_f1"]
    rows = [[f"{row['threshold']:.2f}"] + [row[k] for k in keys] for row in sweep]
    return _img(figure, "threshold sweep") + _table(["threshold"] + keys, rows)


def _confusion_section(figures: dict[str, str]) -> str:
    return (
        _img(figures["confusion"], "per-class confusion counts")
        + _img(figures["average_precision"], "average precision per class")
        + _img(figures["pr_curves"], "precision-recall curves")
    )


def _thresholds_section(card, notes: tuple[str, ...] = ()) -> str:
    remarks = "".join(f'<p class="note">{escape(note)}.</p>' for note in notes)
    if card.class_thresholds is None:
        return remarks + (
            f"<p>Every class uses the global threshold {card.threshold:g}. "
            "<code>edgemlic thresholds tune</code> writes a checkpoint with per-class ones.</p>"
        )
    rows = [[name, float(t)] for name, t in zip(card.classes, card.class_thresholds, strict=True)]
    how = card.provenance.get("class_thresholds", "")
    tuned = (
        f'<p class="note">Tuned: {escape(how)}. Metrics measured on the images the thresholds were tuned on '
        "are optimistic.</p>"
        if how
        else ""
    )
    return remarks + _table(["class", "threshold"], rows) + tuned


def _images_section(samples, evaluation, thresholds: np.ndarray, max_images: int) -> str:
    """Images ranked by wrong labels, then by their binary cross-entropy; each with its labels marked."""
    from edgemlic.images import decode_image

    scores = np.clip(evaluation.scores.astype(np.float64), 1e-7, 1 - 1e-7)
    truth = evaluation.targets.astype(bool)
    predicted = evaluation.scores >= thresholds
    wrong = np.count_nonzero(predicted != truth, axis=1)
    loss = -np.mean(np.where(truth, np.log(scores), np.log1p(-scores)), axis=1)
    order = np.lexsort((-loss, -wrong))[:max_images]
    cards = []
    for i in order:
        thumbnail = decode_image(samples[i].path)
        thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="JPEG", quality=85)
        uri = f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
        labels = []
        for c, name in enumerate(evaluation.card.classes):
            if truth[i, c] and predicted[i, c]:
                labels.append(f'<span class="ok">{escape(name)}</span>')
            elif predicted[i, c]:
                labels.append(f'<span class="fp">+{escape(name)}</span>')
            elif truth[i, c]:
                labels.append(f'<span class="fn">{escape(name)}</span>')
        cards.append(
            f'<figure><img src="{uri}" alt="{escape(samples[i].path.name)}"><figcaption>'
            f"<b>{escape(samples[i].path.name)}</b> · {wrong[i]} wrong · loss {loss[i]:.3f}<br>"
            f"{' '.join(labels) or '<i>no labels</i>'}</figcaption></figure>"
        )
    legend = (
        '<p class="note">Labels: <span class="ok">correct</span>, <span class="fp">+false positive</span>, '
        '<span class="fn">missed</span>. Ranked by the number of wrong labels, then by binary '
        f"cross-entropy; {len(order)} of {len(samples)} images shown.</p>"
    )
    return legend + f'<div class="grid">{"".join(cards)}</div>'
