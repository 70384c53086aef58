"""The one place that turns an artifact path into a running backend.

Bench, parity, evaluation and the predictor all open artifacts here, with the same device rules. What can
run an artifact is read from `artifacts.FORMATS`; how it runs is the backend's own options type
(`TorchOptions`, `OnnxRuntimeOptions`, `OpenVinoOptions`, `TensorRTOptions`), whose type names the
backend. A new backend is its module and its row in FORMATS; nothing here changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgemlic import checks
from edgemlic.artifacts import FORMATS, Format, artifact_format, format_of
from edgemlic.errors import EdgemlicError, import_optional
from edgemlic.runtime.backend import Backend, BackendOptions

ONNX_BACKENDS = format_of("onnx").backends
"""What can run an .onnx model; the first is the default."""


def load_backend(
    artifact: str | Path,
    device: str = "auto",
    *,
    threads: int | None = None,
    options: BackendOptions | None = None,
) -> Backend:
    """Open a checkpoint (.pt or run folder), ONNX model (.onnx) or TensorRT engine (.engine).

    `device` is auto, cpu, cuda or cuda:N for every kind (an engine refuses cpu: it has no CPU form).
    `threads` sets the CPU threads of PyTorch, ONNX Runtime and OpenVINO. `options` are one backend's and
    choose it (`OpenVinoOptions()` runs an .onnx on OpenVINO); None runs the kind's default backend with
    its defaults. Options of a backend that does not run this kind of artifact are refused.
    """
    path = Path(artifact)
    fmt = artifact_format(path)
    if threads is not None:
        checks.thread_count("threads", threads)
    if options is not None and options.backend not in fmt.backends:
        raise _options_misfit(path, fmt, options)
    opener = backend_class(fmt, fmt.backends[0] if options is None else options.backend)
    return opener(path, device, threads=threads, options=options or opener.options_type())


def backend_class(fmt: Format, name: str) -> type[Backend]:
    """The Backend subclass that runs `fmt` as `name`, imported now: where its library (torch, openvino)
    is missing, the one-line error names the extra that installs it."""
    module, _, cls = fmt.runner(name).backend.partition(":")
    return getattr(import_optional(module), cls)


def _options_misfit(path: Path, fmt: Format, options: BackendOptions) -> EdgemlicError:
    owner = next((f.description for f in FORMATS if options.backend in f.backends), options.backend)
    article = "an" if fmt.kind[0] in "aeiou" else "a"
    return EdgemlicError(
        f"{path}: {options} apply to {owner} only, not to {article} {fmt.kind} artifact, which runs on "
        f"{' or '.join(fmt.backends)}"
    )


def parse_onnx_variant(text: str) -> BackendOptions:
    """The options an .onnx variant names: "openvino" is OpenVinoOptions(), "openvino+throughput+bf16"
    OpenVinoOptions(hint="throughput", inference_precision="bf16"), "onnxruntime+no-spin"
    OnnxRuntimeOptions(spin=False)."""
    name, *words = text.split("+")
    return backend_class(format_of("onnx"), name).options_type.from_words(words)


@dataclass(frozen=True)
class Variant:
    """One artifact and the options it runs with: a row of bench or parity."""

    artifact: Path
    kind: str
    options: BackendOptions | None = None
    """None: its kind's default backend, with its defaults."""


def expand_variants(
    artifacts: Sequence[str | Path], options: Mapping[str, Sequence[BackendOptions]] | None = None
) -> list[Variant]:
    """Each artifact once per entry of `options` for its kind ("checkpoint", "onnx", "engine"), or once
    with its default backend where its kind has none; a missing file or an unknown kind is refused first."""
    variants = []
    for artifact in artifacts:
        path = Path(artifact)
        kind = artifact_format(path).kind
        variants += [Variant(path, kind, each) for each in (options or {}).get(kind) or [None]]
    return variants
