"""The export report: what was written and how close it is to the reference, as JSON and as text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any


def graph_summary(model: Any, path: Path) -> dict[str, Any]:
    """File size, node count, Q/DQ node counts and initializer element types of a written graph."""
    import onnx

    ops = Counter(node.op_type for node in model.graph.node)
    dtypes = Counter(onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer)
    return {
        "size_bytes": path.stat().st_size,
        "nodes": len(model.graph.node),
        "quantize_linear": ops["QuantizeLinear"],
        "dequantize_linear": ops["DequantizeLinear"],
        "initializer_dtypes": dict(sorted(dtypes.items())),
    }


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def format_report(report: dict[str, Any]) -> str:
    """A few lines for the console: the artifact and its gate, then the FP32 graph it came from with its
    own gate, indented under it, so no figure sits under a graph it does not belong to."""
    graph = report["graph"]
    target = f" ({report['int8_target']})" if report.get("int8_target") else ""
    lines = [f"{report['artifact']}: {report['precision']}{target}, {_megabytes(graph['size_bytes'])}"]
    dtypes = ", ".join(f"{name} {count}" for name, count in graph["initializer_dtypes"].items())
    lines.append(
        f"  graph: {graph['nodes']} nodes, {graph['quantize_linear']} QuantizeLinear, "
        f"{graph['dequantize_linear']} DequantizeLinear; initializers: {dtypes}"
    )
    calibration = report.get("calibration")
    if calibration:
        lines.append(
            f"  calibration: {calibration['images']} images, {calibration['method']}, manifest "
            f"{calibration['manifest']} (sha256 {calibration['manifest_sha256'][:12]}), "
            f"cache {'hit' if calibration['cache_hit'] else 'miss'}"
        )
        if calibration.get("note"):
            lines.append(f"  note: {calibration['note']}")
        if calibration.get("cache_rejected"):
            lines.append(
                f"  calibration cache {calibration['cache_file']} not used "
                f"({calibration['cache_rejected']}); calibrated again"
            )
    source = f" {report['gate_images']}" if report.get("gate_images") else ""
    if report.get("mixed"):
        lines += _mixed_lines(report["mixed"], report.get("int8_target"))
        lines.append(_gate_line(report["gate"], source) + _not_the_verdict(report["gate"], report["mixed"]))
    else:
        lines.append(_gate_line(report["gate"], source))
    fp32 = report["fp32"]
    if report["precision"] != "fp32":
        lines.append(
            f"  fp32 graph: {fp32['path']} ({'reused' if fp32['reused'] else 'exported'}, "
            f"{_megabytes(fp32['size_bytes'])})"
        )
        if fp32.get("gate"):
            lines.append("  " + _gate_line(fp32["gate"], source))
    lines.append(f"  report: {report['report']}")
    return "\n".join(lines)


_REFERENCES = {"pytorch": "PyTorch", "fp32-onnx": "the fp32 graph"}


def _gate_line(gate: dict[str, Any], source: str) -> str:
    reference = _REFERENCES.get(gate["reference"], gate["reference"])
    return (
        f"  gate vs {reference} on {gate['images']}{source} images: "
        f"max abs diff {gate['max_abs_diff']:.3g}, mean {gate['mean_abs_diff']:.3g}, "
        f"flips {100 * gate['flip_rate']:.2f}%"
    )


def _not_the_verdict(gate: dict[str, Any], mixed: dict[str, Any]) -> str:
    """Why the gate's flips differ from the verdict's: other images, a looser limit, another purpose."""
    limit = (gate.get("budget") or {}).get("max_flip_rate")
    limit = f", flips <= {100 * limit:g}%" if limit is not None else ""
    return (
        f" (the export gate{limit}: it catches a broken graph; the budget's verdict is the "
        f"{mixed['verdict']['mixed']['images']}-image line above)"
    )


def comparison_figures(m: dict[str, Any]) -> str:
    """Flips, F1 change and largest score change of a measured graph, as one phrase."""
    f1 = "" if m["delta_micro_f1"] is None else f", micro-F1 {m['delta_micro_f1']:+.4f}"
    return f"flips {100 * m['flip_rate']:.2f}%{f1}, max |dp| {m['max_abs_diff']:.3f}"


def _mixed_lines(mixed: dict[str, Any], target: str | None) -> list[str]:
    said = comparison_figures
    layers = mixed["float_layers"]
    budget = ", ".join(
        f"{name.removeprefix('max_')} <= {v:g}" for name, v in mixed["budget"].items() if v is not None
    )
    kind = "float16" if target == "tensorrt" else "float"
    kept = f"{len(layers)} layers in {kind} ({', '.join(layers)})" if layers else "no layer in float"
    search, verdict = mixed["search"], mixed["verdict"]
    lines = [
        f"  mixed precision: {kept}, for the budget {budget} against the fp32 graph, on labelled "
        f"{mixed['held_out_split']} images calibration did not use",
        f"    search (chose the layers), {search['plain']['images']} images: plain INT8 "
        f"{said(search['plain'])}; mixed {said(search['mixed'])}",
        f"    verdict, {verdict['plain']['images']} other images: plain INT8 {said(verdict['plain'])}; "
        f"mixed {said(verdict['mixed'])}: budget {'met' if mixed['verdict_met'] else 'MISSED'} "
        "(this decides)",
    ]
    judged = verdict["mixed"]
    if "flip_rate_ci95" in judged:
        low, high = judged["flip_rate_ci95"]
        lines.append(
            f"    verdict flips {judged['flips']} of {judged['decisions']} decisions, 95% interval "
            f"{100 * low:.2f}-{100 * high:.2f}%"
        )
        if not judged["judgeable"]:
            lines.append(
                f"    WARNING: {judged['decisions']} decisions cannot judge a flip budget of "
                f"{100 * mixed['budget']['max_flip_rate']:g}% (that needs {judged['decisions_needed']} or "
                "more): add held-out images (--holdout-split)"
            )
    if mixed["speed"]:
        speed = mixed["speed"]
        lines.append(
            f"    speed ({speed['backend']}): {speed['mixed_images_per_s']:.1f} images/s, "
            f"{speed['mixed_share']:.2f} of plain INT8's {speed['plain_images_per_s']:.1f}"
            + (
                f", {speed['mixed_vs_fp32']:.2f} of FP32's {speed['fp32_images_per_s']:.1f}"
                if "fp32_images_per_s" in speed
                else ""
            )
        )
        if speed.get("slower_than_fp32"):
            lines.append(
                "    WARNING: the mixed graph is slower than the FP32 graph it replaces on this CPU; "
                "deploy FP32 here, or fewer float layers"
            )
    if mixed["sensitivity"]:
        worst = "; ".join(f"{row['layer']} {said(row)}" for row in mixed["sensitivity"][:3])
        lines.append(f"    most damaging layers (INT8 with only that layer in float): {worst}")
    return lines
