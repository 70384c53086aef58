"""OpenVINO backend: runs edgemlic's ONNX graphs (FP32, FP16, Q/DQ INT8) on x86 and Arm CPUs.

OpenVINO reads the ONNX file itself and keeps its metadata, so the model card comes with it and
neither onnx nor torch is needed. Its CPU plugin would compute in bfloat16 on CPUs that have it
(avx512_bf16 or AMX); edgemlic asks for float32 by default, so the graph's own precision is what runs
(an INT8 graph still runs its integer kernels). bf16 is a precision of its own
(`OpenVinoOptions(inference_precision="bf16")`, the variant "openvino+bf16"): about twice FP32's speed with no
calibration, named "bf16" in bench and parity rows and judged by parity's bf16 budget. Two hints, as
OpenVINO defines them:
- latency: one stream using every core for one batch at a time;
- throughput: several streams; a batch is split over them and its parts run at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgemlic.errors import EdgemlicError, first_line, import_optional
from edgemlic.runtime.backend import Backend, BackendOptions, parse_device
from edgemlic.runtime.onnx_backend import (
    CARD_METADATA_KEY,
    batch_range,
    check_io_against_card,
    check_one_input_one_output,
    read_card_metadata,
)
from edgemlic.runtime.pool import Pool

HINTS = ("latency", "throughput")
INFERENCE_PRECISIONS = ("f32", "bf16")
"""OpenVINO's INFERENCE_PRECISION_HINT values edgemlic offers: the graph's precision, or bfloat16."""


@dataclass(frozen=True)
class OpenVinoOptions(BackendOptions):
    """OpenVINO's performance hint (latency or throughput) and inference precision (f32 or bf16)."""

    backend: ClassVar[str] = "openvino"
    WORDS: ClassVar[dict[str, dict[str, str]]] = {
        "throughput": {"hint": "throughput"},
        "bf16": {"inference_precision": "bf16"},
    }

    hint: str = "latency"
    inference_precision: str = "f32"

    def __post_init__(self) -> None:
        if self.hint not in HINTS:
            raise EdgemlicError(f"unknown OpenVINO hint {self.hint!r}; choose {' or '.join(HINTS)}")
        if self.inference_precision not in INFERENCE_PRECISIONS:
            raise EdgemlicError(
                f"unknown OpenVINO inference precision {self.inference_precision!r}; choose "
                f"{' or '.join(INFERENCE_PRECISIONS)}"
            )


class OpenVinoBackend(Backend):
    name = "openvino"
    options_type = OpenVinoOptions

    def __init__(
        self,
        path: str | Path,
        device: str = "auto",
        *,
        threads: int | None = None,
        options: OpenVinoOptions | None = None,
    ) -> None:
        self.path = path = Path(path)
        self.options = options or OpenVinoOptions()
        if parse_device(device)[0] == "cuda":
            raise EdgemlicError(
                "OpenVINO runs edgemlic's models on the CPU; use --device cpu, or ONNX Runtime or TensorRT "
                "for the GPU"
            )
        core = _core()
        if self.options.inference_precision == "bf16" and "BF16" not in _capabilities(core):
            raise EdgemlicError(
                f"this CPU ({core.get_property('CPU', 'FULL_DEVICE_NAME')}) has no bf16 instructions "
                "(avx512_bf16 or AMX), so OpenVINO cannot run bf16 here; use openvino without +bf16"
            )
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise EdgemlicError(
                f"{path}: OpenVINO cannot read this ONNX model ({first_line(e, 160)})"
            ) from None
        self.card = read_card_metadata(_metadata(model), path)
        check_one_input_one_output(path, len(model.inputs), len(model.outputs))
        (inp,), (out,) = model.inputs, model.outputs
        check_io_against_card(path, self.card, _dims(inp), _dims(out), inp.get_element_type().to_dtype().name)
        self.min_batch, self.max_batch = batch_range(path, _dims(inp))
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": self.options.hint.upper(),
            "INFERENCE_PRECISION_HINT": self.options.inference_precision,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(model, "CPU", config)
        self.device = "cpu"
        self.streams = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.cpu_threads = int(self._compiled.get_property("INFERENCE_NUM_THREADS"))
        """The cores inference computes on, as OpenVINO settled them (`threads`, or its own choice)."""
        # Infer requests are not thread-safe: each is lent to one caller at a time; a batch in the
        # throughput hint takes up to `streams` of them.
        self._pool: Pool[Any] = Pool(self._compiled.create_infer_request, self.streams)

    @property
    def precision(self) -> str:
        """bf16 for a float graph run in bf16; an INT8 graph stays int8 (its convolutions are integer)."""
        if self.options.inference_precision == "bf16" and self.card.precision in ("fp32", "fp16"):
            return "bf16"
        return self.card.precision

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        # A graph with a fixed batch takes its batch whole: `infer` hands it one run's worth at a time.
        split = self.options.hint == "throughput" and self.max_batch is None
        wanted = min(self.streams, len(batch)) if split else 1
        with self._pool.lease_many(wanted) as requests:
            if len(requests) == 1:
                # what a plain loop does: one synchronous call, and the input read where it lies
                # (share_inputs) instead of copied into the request's own buffer first
                requests[0].infer([batch], share_inputs=True)
            else:
                parts = np.array_split(batch, len(requests))
                for request, part in zip(requests, parts, strict=True):
                    request.start_async([part], share_inputs=True)  # the parts outlive the waits below
                for request in requests:
                    request.wait()
            # copies: each request's output buffer is reused by its next inference
            return np.concatenate([np.array(r.get_output_tensor(0).data, dtype=np.float32) for r in requests])

    def _close(self) -> None:
        self._pool.drain()
        self._compiled = None


@functools.cache
def _core() -> Any:
    """One OpenVINO Core for the process. Its CPU plugin installs an alternate signal stack per Core
    and puts back the previous one when that Core goes; Cores freed out of order leave a freed stack
    installed, and the next Python signal handler (Ctrl+C, SIGCHLD) then kills the process with
    SIGSEGV (seen with OpenVINO 2026.4). One Core that lives as long as the process avoids that, and
    spares each backend the plugin's start-up."""
    return import_optional("openvino").Core()


def _capabilities(core: Any) -> list[str]:
    """What the CPU plugin can compute in on this CPU: "BF16" only where the CPU has bf16 instructions."""
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _metadata(model: Any) -> dict[str, str]:
    """The ONNX file's metadata props, which OpenVINO keeps under rt_info["framework"]."""
    if not model.has_rt_info(["framework", CARD_METADATA_KEY]):
        return {}
    return {CARD_METADATA_KEY: model.get_rt_info(["framework", CARD_METADATA_KEY]).astype(str)}


def _dims(port: Any) -> list:
    """A port's shape with dynamic dimensions as None."""
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
