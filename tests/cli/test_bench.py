"""`edgemlic bench` gives what `run_bench` gives, prints only what was measured, and bad input is one line."""

import json

import pytest

from edgemlic.bench import run_bench
from edgemlic.bench.environment import cpu_identity
from edgemlic.bench.peak import count_macs


def test_command_matches_the_library(exported, synth_root, tmp_path, cli):
    library = run_bench([exported["fp32"]], (1, 2), iters=4, coco_root=synth_root)
    code, out, err = cli(
        [
            "bench",
            str(exported["fp32"]),
            "--batch-sizes",
            "1,2",
            "--iters",
            "4",
            "--coco-root",
            str(synth_root),
            "--json",
            str(tmp_path / "bench.json"),
            "--plot",
            str(tmp_path / "bench.png"),
        ]
    )
    assert code == 0 and not err and "model.fp32" in out and "results written to" in out
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["environment"]["artifact_sha256"] == library.environment["artifact_sha256"]
    timing = {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "images_per_s", "peak_rss_mb", "speedup_vs_pytorch"}
    timing |= {"load_average", "other_cpu_s", "other_cpu_share"}
    assert len(written["cells"]) == 2
    for ours, theirs in zip(library.cells, written["cells"], strict=True):
        expected = {k: v for k, v in ours.to_dict().items() if k not in timing}
        assert {k: v for k, v in theirs.items() if k not in timing} == expected
        assert theirs["p50_ms"] <= theirs["p90_ms"] <= theirs["p99_ms"]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_command_bad_input_is_one_line(exported, tmp_path, cli):
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not an engine")
    cases = [
        (["bench", str(tmp_path / "missing.onnx")], "artifact not found"),
        (["bench", str(exported["fp32"]), "--batch-sizes", "1,x"], "--batch-sizes '1,x'"),
        (["bench", str(exported["fp32"]), "--mode", "fast"], "unknown benchmark mode 'fast'"),
        (
            ["bench", str(engine), "--batch-sizes", "1,8", "--iters", "1"],
            "no cell could run; first error: " + str(engine),
        ),
    ]
    for args, message in cases:
        code, out, err = cli(args)
        assert code == 1 and err.count("\n") == 1 and err.startswith("edgemlic: error: ") and message in err
    # the reason is wrapped to the terminal's width wherever the temporary path's length puts it
    assert out.count("model.fp16.engine: tensorrt\n  cannot run: ") == 1
    assert "no fingerprint" in " ".join(out.split())


def test_cuda_graphs_reach_engines_only(exported, tmp_path, cli):
    code, _, err = cli(["bench", str(exported["fp32"]), "--cuda-graphs"])
    assert code == 1 and "--cuda-graphs applies to TensorRT engines and none is benchmarked" in err
    engine = tmp_path / "model.fp16.engine"
    engine.write_bytes(b"not an engine")
    report = run_bench([engine], [1], iters=1, cuda_graphs=True)
    assert [cell.variant for cell in report.cells] == ["cuda-graphs"] and report.cells[0].error


def test_the_table_says_only_what_was_measured(tiny_checkpoint, exported, cli):
    """No PyTorch row, no "vs PyTorch" column of dashes; an INT8 graph in the TensorRT form timed on a
    CPU gets a note under its table (ONNX Runtime runs it slower than FP32), the CPU form none."""
    graphs = [str(exported["int8"]), str(exported["int8-cpu"])]
    quick = ["--batch-sizes", "1", "--warmup", "1", "--iters", "2", "--device", "cpu"]
    code, out, err = cli(["bench", *graphs, *quick])
    assert code == 0, err
    assert "vs PyTorch" not in out and "img/s" in out
    note = (
        "  note: the TensorRT form of INT8 (signed Q/DQ, for `edgemlic engine build`); ONNX Runtime runs it "
        "slower than FP32 on a CPU. For CPU deployment export with --target cpu."
    )
    assert out.count(note) == 1
    assert out.index("model.int8.onnx:") < out.index(note) < out.index("model.int8-cpu.onnx:")

    code, out, err = cli(["bench", str(tiny_checkpoint), graphs[1], *quick])
    assert code == 0, err
    assert out.count("vs PyTorch") == 2 and "1.00x" in out and "note:" not in out


@pytest.mark.usefixtures("x86_compiler")
def test_bench_command_prints_and_writes_the_machine_and_its_peak(cli, exported, tmp_path):
    """`edgemlic bench --peak --json`: the same record as the library, and brief lines for people."""
    out = tmp_path / "bench.json"
    code, stdout, _ = cli(
        ["bench", exported["int8-cpu"], "--batch-sizes", "1", "--iters", "3", "--warmup", "1", "--peak"]
        + ["--json", out]
    )
    assert code == 0, stdout
    record = json.loads(out.read_text())
    environment, (cell,) = record["environment"], record["cells"]
    assert environment["cpu_identity"]["family"] == cpu_identity().family
    assert environment["peaks"]["int8_gmac_per_s"] > 0
    assert cell["gmac_per_image"] == pytest.approx(count_macs(exported["int8-cpu"]) / 1e9, rel=1e-4)
    assert cell["peak_share"] > 0
    assert "of peak" in stdout and "peaks measured now on" in stdout
    energy = environment["machine_state"]["energy_source"]
    assert (f"energy from {energy}" if energy else "energy not measured (") in stdout.replace("\n", " ")
