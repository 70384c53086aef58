"""What layers kept out of INT8 cost in speed: plain INT8 against 1, 4 and 8 float layers, ResNet-50.

    python benchmarks/float_layer_cost.py WORK   # WORK: the --work folder of benchmarks/run.py

The layers are the most damaging ones of the sensitivity table that the mixed export measured on the
random-weight ResNet-50 (its CPU form), in that order. Both graphs of a pair run in ONNX Runtime at
batch 1 with spinning off, alternating with the FP32 graph (`edgemlic.export.mixed.compare_speed`). Writes
results/float_layer_cost.json, the machine and its peaks first, and prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from machine import recorded_machine

from edgemlic.card import Preprocessing
from edgemlic.export.mixed import compare_speed, keep_in_float
from edgemlic.images import preprocess_batch
from edgemlic.io import write_json

MOST_DAMAGING = [
    "0.layer1.1.conv1", "0.fc", "0.layer4.1.conv1", "0.layer2.1.conv1",
    "node_add_95", "0.layer1.2.conv2", "0.layer3.5.conv1", "0.layer3.1.conv1",
]  # fmt: skip
COCO_VAL = Path(__file__).resolve().parents[2] / "shared" / "coco-mini" / "val2017"


def main() -> None:
    folder = Path(sys.argv[1]) / "resnet50"
    fp32 = onnx.load(folder / "model.fp32.onnx")
    photo = preprocess_batch(sorted(COCO_VAL.glob("*.jpg"))[:1], Preprocessing(224, 256))
    graphs = {"model.int8-cpu.onnx": "cpu", "model.int8.onnx": "tensorrt"}
    rows = []
    with recorded_machine([folder / "model.fp32.onnx", *(folder / name for name in graphs)]) as environment:
        for name, target in graphs.items():
            plain = onnx.load(folder / name)
            for count in (1, 4, 8):
                mixed = keep_in_float(plain, fp32, MOST_DAMAGING[:count], target)
                rows.append(
                    {"graph": name, "float_layers": count, **compare_speed(fp32, plain, mixed, photo)}
                )
                print(rows[-1], flush=True)
    write_json(
        Path(__file__).parent / "results" / "float_layer_cost.json",
        {"environment": environment, "layers": MOST_DAMAGING, "rows": rows},
    )


if __name__ == "__main__":
    main()
