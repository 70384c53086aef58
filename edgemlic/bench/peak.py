"""This machine's own limits, measured in this run, and a model's multiply-adds counted from its graph.

A share of peak means something only against the peak of the machine the figure came from: the same
"AMD EPYC, AVX-512 VNNI" is a Zen 4 that double-pumps 512-bit `vpdpbusd` on one run and a Zen 5 that
retires two per cycle on the next. So the peaks are measured, not looked up: a small C program (below),
compiled with the system's C compiler into a temporary folder, runs one copy per core used at once for
a fraction of a second per figure, each rate per second of the CPU time the copy got (so that other
processes on a shared machine do not lower it):

- INT8: `vpdpbusd` (AVX-512 VNNI, else AVX-VNNI), else AVX2's `vpmaddubsw` (the multiply every integer
  GEMM without VNNI needs; its widening adds come on top, so kernels stay below it);
- FP32: `vfmadd` (AVX-512, else AVX2 FMA);
- both on independent chains (16 in 512-bit registers; 12 in 256-bit ones, of which there are only 16,
  so none spills to memory), so that only the issue rate limits them;
- the core clock: a chain of dependent register adds (one per cycle on every x86-64 core), which reads
  the clock the core really ran at, where /proc/cpuinfo under a hypervisor reports a nominal one.

Figures are giga multiply-adds per second (one FMA is one multiply-add). The source is kept here rather
than in a .c file so that it travels with the installed package.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PEAK_SECONDS = 0.3
"""Timed seconds per figure (after a tenth as much untimed, for the core to settle its clock)."""

_SOURCE = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Runs `chunk` for `warm` untimed seconds, then whole chunks for `seconds` of wall time; returns the
 * rate of `work_per_chunk` units per second of this thread's CPU time, so that time the scheduler gave
 * to other processes does not count against the core. */
#define TIMED(setup, chunk, work_per_chunk, finish)                                 \
    {                                                                               \
        setup;                                                                      \
        double start = now(), stop = start + warm;                                  \
        while (now() < stop) { chunk; }                                             \
        long chunks = 0;                                                            \
        double cpu_start = cpu_now();                                               \
        stop = now() + seconds;                                                     \
        do { chunk; chunks++; } while (now() < stop);                               \
        double cpu_seconds = cpu_now() - cpu_start;                                 \
        finish;                                                                     \
        return chunks * (double)(work_per_chunk) / cpu_seconds;                     \
    }

#define REPEAT 20000L
/* Independent chains: enough to hide each instruction's latency, few enough that they and the operands
 * stay in registers (32 zmm, but only 16 ymm: a spill would time loads and stores instead). */
#define TWELVE(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define SIXTEEN(op) TWELVE(op) op(12) op(13) op(14) op(15)
static volatile long long sink;

#if defined(INT8_AVX512_VNNI)
#define DECLARE(i) __m512i c##i = _mm512_set1_epi32(seed + i);
#define STEP(i) c##i = _mm512_dpbusd_epi32(c##i, a, b);
#define FOLD(i) sum = _mm512_add_epi32(sum, c##i);
static double int8_rate(double warm, double seconds) {
    volatile char seed = 1; /* not a constant the compiler could fold */
    TIMED(__m512i a = _mm512_set1_epi8(seed); __m512i b = _mm512_set1_epi8((char)(seed + 1));
          SIXTEEN(DECLARE),
          for (long i = 0; i < REPEAT; i++) { SIXTEEN(STEP) },
          REPEAT * 16 * 64,
          __m512i sum = _mm512_setzero_si512(); SIXTEEN(FOLD) sink = _mm512_reduce_add_epi32(sum))
}
#undef DECLARE
#undef STEP
#undef FOLD
#elif defined(INT8_AVX_VNNI)
#define DECLARE(i) __m256i c##i = _mm256_set1_epi32(seed + i);
#define STEP(i) c##i = _mm256_dpbusd_avx_epi32(c##i, a, b);
#define FOLD(i) sum = _mm256_add_epi32(sum, c##i);
static double int8_rate(double warm, double seconds) {
    volatile char seed = 1;
    TIMED(__m256i a = _mm256_set1_epi8(seed); __m256i b = _mm256_set1_epi8((char)(seed + 1));
          TWELVE(DECLARE),
          for (long i = 0; i < REPEAT; i++) { TWELVE(STEP) },
          REPEAT * 12 * 32,
          __m256i sum = _mm256_setzero_si256(); TWELVE(FOLD)
          sink = _mm256_extract_epi32(sum, 0) + _mm256_extract_epi32(sum, 7))
}
#undef DECLARE
#undef STEP
#undef FOLD
#elif defined(INT8_AVX2)
/* u8 x s8 products summed in pairs to s16 (vpmaddubsw): 32 multiplies per instruction, the one every
 * integer GEMM without VNNI needs (widening to s32 with vpmaddwd and vpaddd is extra work on top, so
 * no kernel reaches this ceiling). Each chain's result is its next u8 operand: with two constant
 * operands the compiler would hoist the multiply out of the loop. */
#define DECLARE(i) __m256i c##i = _mm256_set1_epi32(seed + i);
#define STEP(i) c##i = _mm256_maddubs_epi16(c##i, b);
#define FOLD(i) sum = _mm256_add_epi16(sum, c##i);
static double int8_rate(double warm, double seconds) {
    volatile char seed = 1;
    TIMED(__m256i b = _mm256_set1_epi8((char)(seed + 1)); TWELVE(DECLARE),
          for (long i = 0; i < REPEAT; i++) { TWELVE(STEP) },
          REPEAT * 12 * 32,
          __m256i sum = _mm256_setzero_si256(); TWELVE(FOLD)
          sink = _mm256_extract_epi32(sum, 0) + _mm256_extract_epi32(sum, 7))
}
#undef DECLARE
#undef STEP
#undef FOLD
#endif

#if defined(FP32_AVX512)
#define DECLARE(i) __m512 c##i = _mm512_set1_ps(seed + i);
#define STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
#define FOLD(i) sum = _mm512_add_ps(sum, c##i);
static double fp32_rate(double warm, double seconds) {
    volatile float seed = 1.0f;
    /* a just under 1 and b small keep the accumulators finite however long it runs */
    TIMED(__m512 a = _mm512_set1_ps(0.999f * seed); __m512 b = _mm512_set1_ps(1e-3f * seed); SIXTEEN(DECLARE),
          for (long i = 0; i < REPEAT; i++) { SIXTEEN(STEP) },
          REPEAT * 16 * 16,
          __m512 sum = _mm512_setzero_ps(); SIXTEEN(FOLD) sink = (long long)_mm512_reduce_add_ps(sum))
}
#undef DECLARE
#undef STEP
#undef FOLD
#elif defined(FP32_AVX2)
#define DECLARE(i) __m256 c##i = _mm256_set1_ps(seed + i);
#define STEP(i) c##i = _mm256_fmadd_ps(c##i, a, b);
#define FOLD(i) sum = _mm256_add_ps(sum, c##i);
static double fp32_rate(double warm, double seconds) {
    volatile float seed = 1.0f;
    TIMED(__m256 a = _mm256_set1_ps(0.999f * seed); __m256 b = _mm256_set1_ps(1e-3f * seed); TWELVE(DECLARE),
          for (long i = 0; i < REPEAT; i++) { TWELVE(STEP) },
          REPEAT * 12 * 8,
          __m256 sum = _mm256_setzero_ps(); TWELVE(FOLD) float lanes[8]; _mm256_storeu_ps(lanes, sum);
          sink = (long long)lanes[0])
}
#undef DECLARE
#undef STEP
#undef FOLD
#endif

/* Ten dependent adds of a register: ten cycles on any x86-64 core. Counts cycles, so the rate is Hz. */
static double clock_rate(double warm, double seconds) {
    TIMED(long x = 0; long y = sink | 1,
          for (long i = 0; i < REPEAT; i++) {
              __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
                               "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0"
                               : "+r"(x) : "r"(y));
          },
          REPEAT * 10,
          sink = x)
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s int8|fp32|clock SECONDS\n", argv[0]); return 2; }
    double seconds = atof(argv[2]), warm = seconds / 10, rate = -1;
#if defined(INT8_AVX512_VNNI) || defined(INT8_AVX_VNNI) || defined(INT8_AVX2)
    if (!strcmp(argv[1], "int8")) rate = int8_rate(warm, seconds);
#endif
#if defined(FP32_AVX512) || defined(FP32_AVX2)
    if (!strcmp(argv[1], "fp32")) rate = fp32_rate(warm, seconds);
#endif
    if (!strcmp(argv[1], "clock")) rate = clock_rate(warm, seconds);
    if (rate < 0) { fprintf(stderr, "%s was not compiled in\n", argv[1]); return 2; }
    printf("%.3f\n", rate / 1e9);
    return 0;
}
"""

INT8_KERNELS = (
    ("avx512_vnni", "INT8_AVX512_VNNI", ("-mavx512f", "-mavx512bw", "-mavx512vnni"), ("avx512_vnni",)),
    ("avx_vnni", "INT8_AVX_VNNI", ("-mavx2", "-mavxvnni"), ("avx_vnni", "avx2")),
    ("avx2", "INT8_AVX2", ("-mavx2",), ("avx2",)),
)
"""(name, macro, compiler flags, CPU flags it needs): the best one the CPU has is measured."""
FP32_KERNELS = (
    ("avx512f", "FP32_AVX512", ("-mavx512f",), ("avx512f",)),
    ("avx2_fma", "FP32_AVX2", ("-mavx2", "-mfma"), ("avx2", "fma")),
)


def _best(kernels: Sequence[tuple[str, str, tuple[str, ...], tuple[str, ...]]], flags: set[str]):
    return next((k for k in kernels if set(k[3]) <= flags), None)


def measure_peaks(
    cores: int, cpu_flags: Iterable[str], *, seconds: float = PEAK_SECONDS, compiler: str | None = None
) -> dict[str, Any]:
    """INT8 and FP32 multiply-add peaks and the core clock, with `cores` copies running at once.

    Returns totals over the cores (GMAC/s), the per-core mean clock (GHz), the kernels used, and for
    each figure that could not be measured `None` with the reason in `not_measured`.
    """
    import platform

    record: dict[str, Any] = {
        "cores": cores,
        "seconds_per_figure": seconds,
        "int8_gmac_per_s": None,
        "fp32_gmac_per_s": None,
        "core_ghz": None,
        "int8_kernel": None,
        "fp32_kernel": None,
        "not_measured": {},
    }
    if platform.machine().lower() not in ("x86_64", "amd64"):
        reason = f"the peak loops are written for x86-64; this machine is {platform.machine()}"
        record["not_measured"] = dict.fromkeys(("int8", "fp32", "core_ghz"), reason)
        return record
    flags = set(cpu_flags)
    int8, fp32 = _best(INT8_KERNELS, flags), _best(FP32_KERNELS, flags)
    if int8 is None:
        record["not_measured"]["int8"] = "the CPU has neither AVX-512 VNNI, AVX-VNNI nor AVX2"
    if fp32 is None:
        record["not_measured"]["fp32"] = "the CPU has neither AVX-512 nor AVX2 with FMA"
    chosen = [k for k in (int8, fp32) if k is not None]
    compiler = compiler or os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory(prefix="edgemlic-peak-") as tmp:
        try:
            binary = _compile(Path(tmp), compiler, chosen)
        except _NoCompiler as e:
            record["not_measured"] = dict.fromkeys(("int8", "fp32", "core_ghz"), str(e))
            return record
        figures = {"core_ghz": "clock"}
        if int8:
            figures["int8_gmac_per_s"] = "int8"
            record["int8_kernel"] = int8[0]
        if fp32:
            figures["fp32_gmac_per_s"] = "fp32"
            record["fp32_kernel"] = fp32[0]
        for key, mode in figures.items():
            rates = _run_copies(binary, mode, cores, seconds)
            if key == "core_ghz":
                record[key] = round(sum(rates) / len(rates), 3)
            else:
                record[key] = round(sum(rates), 1)
                record[key.replace("gmac", "per_core_gmac")] = [round(r, 1) for r in rates]
    if not record["not_measured"]:
        record.pop("not_measured")
    return record


class _NoCompiler(Exception):
    pass


def _compile(folder: Path, compiler: str, kernels: list[tuple[str, str, tuple[str, ...], Any]]) -> Path:
    if shutil.which(compiler) is None:
        raise _NoCompiler(f"no C compiler ({compiler!r} is not on PATH; set CC or install gcc)")
    source, binary = folder / "peak.c", folder / "peak"
    source.write_text(_SOURCE)
    defines = [f"-D{macro}" for _, macro, _, _ in kernels]
    options = sorted({flag for _, _, flags, _ in kernels for flag in flags})
    build = subprocess.run(
        [compiler, "-O2", *defines, *options, "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        first = (build.stderr.strip().splitlines() or ["no message"])[0]
        raise _NoCompiler(f"{compiler} could not build the peak loops: {first}")
    return binary


def _run_copies(binary: Path, mode: str, copies: int, seconds: float) -> list[float]:
    """One copy per core at once (the kernel spreads them), each printing its own rate."""
    processes = [
        subprocess.Popen([str(binary), mode, str(seconds)], stdout=subprocess.PIPE, text=True)
        for _ in range(copies)
    ]
    rates = []
    for process in processes:
        out, _ = process.communicate(timeout=60 + 10 * seconds)
        if process.returncode != 0:
            raise RuntimeError(f"the {mode} peak loop failed with exit status {process.returncode}")
        rates.append(float(out.split()[0]))
    if not all(math.isfinite(r) and r > 0 for r in rates):
        raise RuntimeError(f"the {mode} peak loop printed {rates}")
    return rates


def peak_for(peaks: dict[str, Any] | None, precision: str, cores: int) -> float | None:
    """The measured peak (GMAC/s) a cell of this precision on this many cores can reach, or None.

    INT8 cells are held against the INT8 peak and FP32 cells against the FP32 one; the per-core
    figures of the first `cores` copies are summed (all of them ran at once, like a loaded machine).
    """
    if not peaks:
        return None
    per_core = peaks.get(
        {"int8": "int8_per_core_gmac_per_s", "fp32": "fp32_per_core_gmac_per_s"}.get(precision, "")
    )
    if not per_core:
        return None
    return sum(sorted(per_core, reverse=True)[: max(1, min(cores, len(per_core)))])


# ---- multiply-adds from the graph -------------------------------------------------------------------

_CONV = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
"""Convolutions and the input index of their weight."""
_MATMUL = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}
"""Matrix products and the input indices of their two operands."""


def count_macs(onnx_path: str | Path) -> int:
    """Multiply-adds per image of an ONNX graph: its convolutions and matrix products, from the shapes
    ONNX shape inference gives every tensor (float, QDQ INT8 and QOperator INT8 graphs alike).

    The batch dimension counts as one image. A product whose shape cannot be inferred raises
    ValueError rather than being left out, so a count is never silently low.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    graph = model.graph
    shapes: dict[str, list[int | None]] = {t.name: list(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
            ]
    for node in graph.node:  # Constant weights (some exporters write them as nodes)
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    shapes[node.output[0]] = list(attribute.t.dims)

    def shape(name: str, node: Any) -> list[int]:
        dims = shapes.get(name)
        if dims is None or any(d is None for d in dims[1:]):
            raise ValueError(
                f"{node.op_type} node {node.name!r}: the shape of {name!r} is not known ({dims})"
            )
        return [1 if d is None else d for d in dims]  # a symbolic first dim is the batch

    total = 0
    for node in graph.node:
        if node.op_type in _CONV:
            out = shape(node.output[0], node)
            weight = shape(node.input[_CONV[node.op_type]], node)
            total += math.prod(out[1:]) * math.prod(weight[1:])  # each output: C_in/groups * kernel MACs
        elif node.op_type in _MATMUL:
            a_index, b_index = _MATMUL[node.op_type]
            a, out = shape(node.input[a_index], node), shape(node.output[0], node)
            trans_a = any(x.name == "transA" and x.i for x in node.attribute)
            inner = a[0] if trans_a else a[-1]
            batch = out[0] if len(out) > 1 else 1  # rows of a 2-D product, or the leading batch dim
            total += math.prod(out) * inner // batch
    return total


def macs_or_none(onnx_path: str | Path) -> int | None:
    """count_macs, or None for a graph whose shapes cannot be inferred."""
    with contextlib.suppress(ValueError, OSError):
        return count_macs(onnx_path)
    return None
