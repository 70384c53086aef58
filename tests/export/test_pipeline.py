"""export_model's request: one Int8Options per INT8 export, named as the command line names it."""

import dataclasses
from pathlib import Path

import pytest

from edgemlic.compare import Budget
from edgemlic.errors import EdgemlicError
from edgemlic.export.pipeline import Int8Options, MissingCalibrationError, export_model

SET_AWAY_FROM_DEFAULT = {
    "calib_data": ("data", "--calib-data"),
    "calib_files": (["a.jpg"], "calib_files"),
    "calib_split": ("val2017", "--calib-split"),
    "calib_images": (16, "--calib-images"),
    "calib_method": ("minmax", "--calib-method"),
    "calib_manifest": ("m.json", "--calib-manifest"),
    "calib_cache": ("cache", "--calib-cache"),
    "target": ("cpu", "--target"),
    "seed": (3, "--seed"),
    "max_float_layers": (2, "--max-float-layers"),
    "budget": (Budget(max_flip_rate=0.01), "the budget (--max-delta-f1, --max-flip-rate, --max-abs-diff)"),
    "holdout_split": ("val2017", "--holdout-split"),
    "keep_missed_budget": (True, "--keep-missed-budget"),
}


def test_every_option_is_named_as_the_command_line_spells_it():
    assert set(SET_AWAY_FROM_DEFAULT) == {f.name for f in dataclasses.fields(Int8Options)}
    assert Int8Options().changed() == []
    for field, (value, option) in SET_AWAY_FROM_DEFAULT.items():
        assert Int8Options(**{field: value}).changed() == [option]


@pytest.mark.parametrize("field", SET_AWAY_FROM_DEFAULT)
def test_an_int8_option_on_another_precision_is_refused_naming_it(field, tiny_checkpoint, tmp_path):
    value, option = SET_AWAY_FROM_DEFAULT[field]
    with pytest.raises(EdgemlicError, match="applies to INT8 export only") as error:
        export_model(tiny_checkpoint, tmp_path / "out", "fp16", int8=Int8Options(**{field: value}))
    assert str(error.value).startswith(option) and not (tmp_path / "out").exists()


def test_paths_are_paths_and_values_are_checked_where_they_enter():
    options = Int8Options(calib_data="data", calib_files=["a.jpg"], calib_cache="c", calib_manifest="m.json")
    assert options.calib_data == Path("data") and options.calib_files == (Path("a.jpg"),)
    assert options.calib_cache == Path("c") and options.calib_manifest == Path("m.json")
    for bad, message in [
        ({"calib_images": 0}, "--calib-images 0: must be at least 1"),
        ({"seed": -1}, "--seed -1: must be at least 0"),
        ({"max_float_layers": -2}, "--max-float-layers -2"),
        ({"calib_method": "kl"}, "calibration method 'kl'"),
        ({"target": "gpu"}, "INT8 target 'gpu'"),
    ]:
        with pytest.raises(EdgemlicError, match=message):
            Int8Options(**bad)


def test_int8_without_calibration_is_its_own_error(tiny_checkpoint, tmp_path):
    for int8 in (None, Int8Options(seed=1)):
        with pytest.raises(MissingCalibrationError, match="needs calibration images"):
            export_model(tiny_checkpoint, tmp_path / "out", "int8", int8=int8)
    assert (
        Int8Options(holdout_split="val2017", max_float_layers=1, calib_data="d").measured_split == "val2017"
    )
    assert Int8Options(calib_split="val2017").measured_split == "val2017"
