"""The fingerprint beside every TensorRT engine: what it was built from, for and where.

An engine is executable code tied to one TensorRT version and one GPU. `model.int8.engine.json`
records both, the build profile and flags, the SHA-256 of the ONNX source and of the engine, and the
model card. The runtime checks it before TensorRT ever reads the engine: a file that does not hash
to its fingerprint is never deserialized, and a mismatched machine gets the exact rebuild command.

Like the model card, it is a typed, validated, versioned record (`EngineFingerprint`): written by its
`write` method alone, read by `load_fingerprint` alone, and used through its attributes everywhere.

It lives in the runtime (not in `edgemlic.export`) because a Jetson app that only runs engines needs
it, and the runtime imports numpy plus one inference library alone. Everything here except
`probe_environment` and the file's reading and writing is pure: environment facts are passed in as
values so the checks are testable on a machine without TensorRT or a GPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from edgemlic import __version__
from edgemlic.card import ModelCard, Preprocessing
from edgemlic.errors import EdgemlicError
from edgemlic.io import sha256_bytes, sha256_file, write_json

FINGERPRINT_FORMAT_VERSION = 2
"""2 added the device model, SM count, total memory and TF32; version 1 files still load and are
compared on what they have."""
FINGERPRINT_SUFFIX = ".json"
TEGRA_RELEASE_FILE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
"""The board's model string, NUL-terminated, on every device-tree machine: JetPack 6 and 7 link
/proc/device-tree to /sys/firmware/devicetree/base ("NVIDIA Jetson AGX Orin Developer Kit"). It is what
tells Jetson modules apart: every Orin's GPU is "Orin" with compute capability 8.7, and an Orin NX 8GB
and an Orin Nano 8GB also share SM count (8) and memory."""
TF32 = False
"""Whether FP32 layers may run on TF32 tensor cores, for `engine build` and the trtexec recipes alike.
Off: Polygraphy's CreateConfig clears BuilderFlag.TF32 unless tf32=True, while trtexec sets it unless
--noTF32 (TensorRT 10.3 to 11.1 samples/common/sampleOptions.cpp), so the recipes pass --noTF32. An FP32
engine then computes in FP32 like the ONNX Runtime graph it is checked against (TF32 keeps 10 mantissa
bits); speed comes from the FP16 and INT8 graphs. Recorded in every fingerprint."""
L4T_TO_JETPACK = {"32": "4.x", "35": "5.x", "36": "6.x", "38": "7.x", "39": "7.x"}
"""L4T major release -> JetPack generation: JetPack 6 = R36 (Orin, TensorRT 10.3), JetPack 7.0/7.1 = R38
(Thor, TensorRT 10.13), JetPack 7.2 = R39 (Orin and Thor, TensorRT 10.16)."""


@dataclass(frozen=True)
class Environment:
    """The facts an engine depends on, from the machine that builds or runs it."""

    tensorrt: str
    cuda_runtime: str
    cuda_driver: str
    gpu_name: str
    compute_capability: str
    machine: str
    system: str
    l4t: str | None = None
    jetpack: str | None = None
    device_model: str | None = None  # the device-tree model string (Jetson), see DEVICE_TREE_MODEL
    sm_count: int | None = None
    total_memory_mib: int | None = None

    def describe(self) -> str:
        details = [f"compute capability {self.compute_capability}"]
        if self.sm_count is not None:
            details.append(f"{self.sm_count} SMs")
        if self.total_memory_mib is not None:
            details.append(f"{self.total_memory_mib} MiB memory")
        board = f"{self.device_model}, " if self.device_model else ""
        return f"TensorRT {self.tensorrt} on {board}{self.gpu_name} ({', '.join(details)})"

    def device_identity(self) -> dict[str, Any]:
        """What tells GPUs apart for an engine; None where the machine did not say (older fingerprints)."""
        memory = self.total_memory_mib
        return {
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "device_model": self.device_model,
            "sm_count": self.sm_count,
            "memory_class_gib": None if memory is None else memory_class_gib(memory),
        }


def memory_class_gib(total_memory_mib: int) -> int:
    """Total memory rounded to the nearest power of two GiB: 62841 MiB (AGX Orin 64GB) -> 64.

    A Jetson reports its RAM less carve-outs (an 8 GB Orin Nano shows about 7.4 GiB), which moves with
    the L4T release and boot configuration; modules differ by factors of two (4/8/16/32/64 GB)."""
    return 2 ** round(math.log2(max(total_memory_mib, 1) / 1024))


@dataclass(frozen=True)
class BuildProfile:
    """Batch sizes of the one optimization profile: the engine accepts min..max, tuned for opt."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32

    def __post_init__(self) -> None:
        values = (self.min_batch, self.opt_batch, self.max_batch)
        if not all(isinstance(v, int) and v >= 1 for v in values):
            raise EdgemlicError(
                f"batch profile min/opt/max = {self.min_batch}/{self.opt_batch}/{self.max_batch}: "
                "every batch size must be a whole number >= 1"
            )
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise EdgemlicError(
                f"batch profile min/opt/max = {self.min_batch}/{self.opt_batch}/{self.max_batch}: "
                "needs min <= opt <= max (e.g. --min-batch 1 --opt-batch 8 --max-batch 32)"
            )

    def shapes(
        self, preprocessing: Preprocessing
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes of a model that takes `preprocessing`'s input (NCHW or NHWC)."""
        return tuple(preprocessing.input_shape(b) for b in (self.min_batch, self.opt_batch, self.max_batch))


@dataclass(frozen=True)
class BuildFlags:
    """Builder settings that change the engine (and therefore its cache key)."""

    workspace_mb: int = 1024
    dla_core: int | None = None
    version_compatible: bool = False

    def __post_init__(self) -> None:
        if self.workspace_mb < 1:
            raise EdgemlicError(f"workspace {self.workspace_mb} MiB must be at least 1 MiB")
        if self.dla_core is not None and self.dla_core < 0:
            raise EdgemlicError(f"DLA core {self.dla_core} must be 0 or more (Orin has cores 0 and 1)")


def engine_cache_key(onnx_sha256: str, env: Environment, profile: BuildProfile, flags: BuildFlags) -> str:
    """Hash of everything a built engine depends on: same key, same engine, no rebuild needed."""
    inputs = {
        "onnx_sha256": onnx_sha256,
        "tensorrt": env.tensorrt,
        **env.device_identity(),
        "profile": asdict(profile),
        "flags": asdict(flags),
        "tf32": TF32,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def fingerprint_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + FINGERPRINT_SUFFIX)


@dataclass(frozen=True)
class EngineFile:
    """The engine file as written: its name (beside the fingerprint), SHA-256 and size."""

    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class OnnxSource:
    """The ONNX graph the engine was built from, as given to `engine build`, and its SHA-256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class EngineTensors:
    input: str
    output: str


@dataclass(frozen=True)
class PrecisionCheck:
    """What the engine inspector showed about a built engine, and the verdict on it
    (`export.inspector.verify_precision`)."""

    requested: str
    verified: bool
    layers: int
    layer_precisions: dict[str, int]
    """GPU layers by the precision of their first float/int8 input."""
    unknown: int = 0
    """GPU layers with inputs but no compute data type the inspector reported."""
    dla_layers: int = 0
    unplaced: int = 0
    """Layers with neither DLA nor GPU evidence."""
    note: str | None = None


@dataclass(frozen=True)
class EngineFingerprint:
    """The fingerprint of one engine file: written by `write` only, read and validated by `load_fingerprint`.

    `parity` is the record of `compare.Comparison.to_dict()` (engine against ONNX Runtime), or None when
    no images were given; `tf32` is None in format 1 files, which did not record it.
    """

    engine: EngineFile
    onnx: OnnxSource
    io: EngineTensors
    profile: BuildProfile
    flags: BuildFlags
    environment: Environment
    card: ModelCard
    cache_key: str
    precision_check: PrecisionCheck | None
    parity: dict[str, Any] | None
    tf32: bool | None = TF32
    edgemlic_version: str = __version__
    format_version: int = FINGERPRINT_FORMAT_VERSION

    @property
    def precision(self) -> str:
        return self.card.precision

    @classmethod
    def of_engine(
        cls,
        engine: str | Path,
        *,
        onnx: str | Path,
        onnx_sha256: str,
        card: ModelCard,
        env: Environment,
        profile: BuildProfile,
        flags: BuildFlags,
        io: EngineTensors,
        precision_check: PrecisionCheck,
        parity: dict[str, Any] | None,
    ) -> EngineFingerprint:
        """The fingerprint of a built engine file (its hash is taken from the file as written)."""
        engine = Path(engine)
        return cls(
            engine=EngineFile(engine.name, sha256_file(engine), engine.stat().st_size),
            onnx=OnnxSource(str(onnx), onnx_sha256),
            io=io,
            profile=profile,
            flags=flags,
            environment=env,
            card=card,
            cache_key=engine_cache_key(onnx_sha256, env, profile, flags),
            precision_check=precision_check,
            parity=parity,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file (format 2 layout; a loaded format 1 fingerprint keeps its number)."""
        return {
            "format_version": self.format_version,
            "edgemlic_version": self.edgemlic_version,
            "engine": asdict(self.engine),
            "onnx": asdict(self.onnx),
            "precision": self.precision,
            "io": asdict(self.io),
            "profile": asdict(self.profile),
            "flags": asdict(self.flags),
            "environment": asdict(self.environment),
            "tf32": self.tf32,
            "cache_key": self.cache_key,
            "precision_check": None if self.precision_check is None else asdict(self.precision_check),
            "parity": self.parity,
            "card": self.card.to_dict(),
        }

    def write(self, engine: str | Path) -> Path:
        """Write the fingerprint beside `engine`; the one place a fingerprint file is written."""
        path = fingerprint_path(engine)
        write_json(path, self.to_dict())
        return path

    def rebuild_command(self, engine: str | Path) -> str:
        """The `edgemlic engine build` line that rebuilds this engine on the current machine."""
        profile, flags = self.profile, self.flags
        parts = [
            "edgemlic engine build",
            self.onnx.path,
            "--out",
            str(engine),
            "--min-batch",
            str(profile.min_batch),
            "--opt-batch",
            str(profile.opt_batch),
            "--max-batch",
            str(profile.max_batch),
            "--workspace-mb",
            str(flags.workspace_mb),
        ]
        if flags.dla_core is not None:
            parts += ["--dla-core", str(flags.dla_core)]
        if flags.version_compatible:
            parts.append("--version-compatible")
        return " ".join(parts)

    def verify_engine_file(self, engine: str | Path, data: bytes | None = None) -> None:
        """Refuse an engine whose bytes are not the ones fingerprinted (modified, truncated or swapped).

        Pass the bytes about to be deserialized as `data`, so that what is checked is what gets loaded.
        """
        engine = Path(engine)
        expected = self.engine.sha256
        actual = sha256_file(engine) if data is None else sha256_bytes(data)
        if actual != expected:
            raise EdgemlicError(
                f"{engine}: engine file does not match its fingerprint (sha256 {actual[:12]}..., expected "
                f"{expected[:12]}...): it was modified or truncated; only load engines you built or trust, "
                f"rebuild with `{self.rebuild_command(engine)}`"
            )

    def check_compatibility(self, env: Environment, engine: str | Path) -> None:
        """Raise, with the rebuild command, unless this TensorRT and GPU can run the engine.

        Engines run only on the TensorRT version and GPU they were built with. A version-compatible
        engine also runs on later TensorRT releases (never earlier ones); the GPU must still match. The
        GPU is compared on every fact both sides recorded (name, compute capability, and from format 2 on
        the device-tree model, SM count and memory class), so fingerprints of format 1 still load and pass.
        """
        built, flags = self.environment, self.flags
        if flags.version_compatible:
            trt_ok = version_tuple(env.tensorrt) >= version_tuple(built.tensorrt)
        else:
            trt_ok = env.tensorrt == built.tensorrt
        here = env.device_identity()
        gpu_ok = all(
            value is None or here[fact] is None or value == here[fact]
            for fact, value in built.device_identity().items()
        )
        if trt_ok and gpu_ok:
            return
        why = (
            "needs a TensorRT release at least as new as the one it was built with"
            if flags.version_compatible
            else "engines run only where they were built"
        )
        raise EdgemlicError(
            f"{engine}: built for {built.describe()}, this machine has {env.describe()} ({why}); "
            f"rebuild here with `{self.rebuild_command(engine)}`"
        )


def version_tuple(version: str) -> tuple[int, ...]:
    """(10, 3, 0, 30) from "10.3.0.30", for comparing releases."""
    return tuple(int(p) for p in re.findall(r"\d+", version))


def load_fingerprint(engine: str | Path) -> EngineFingerprint:
    """Read and validate the fingerprint beside `engine`: the one place a fingerprint file is read.

    Formats 1 and 2 load (format 1 lacks the device model, SM count, memory and TF32, which read None,
    and may carry the precision check's old "convolutions" count, which is dropped)."""
    engine = Path(engine)
    path = fingerprint_path(engine)
    data = _read_fingerprint_file(engine, path)
    version = _format_version(data, path)
    _check_fields(data, path)
    fingerprint = _fingerprint_from(data, version, path)
    if data["precision"] != fingerprint.precision:
        raise EdgemlicError(
            f"{path}: the fingerprint says precision {data['precision']!r} but its model card says "
            f"{fingerprint.precision!r}; rebuild the engine"
        )
    return fingerprint


def _read_fingerprint_file(engine: Path, path: Path) -> Any:
    """The JSON value in the fingerprint file, or one line saying why there is none."""
    if not path.is_file():
        raise EdgemlicError(
            f"{engine}: no fingerprint {path.name} beside the engine; edgemlic only loads engines it built "
            "and fingerprinted: build one with `edgemlic engine build MODEL.onnx`"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgemlicError(
            f"{path}: engine fingerprint is not valid JSON ({e}); rebuild the engine"
        ) from None


def _format_version(data: Any, path: Path) -> int:
    """The format of a fingerprint object, if this edgemlic reads it."""
    if not isinstance(data, dict) or not _is_a(data.get("format_version"), int):
        raise EdgemlicError(f"{path}: not an edgemlic engine fingerprint (no format_version)")
    version = data["format_version"]
    if version > FINGERPRINT_FORMAT_VERSION:
        raise EdgemlicError(
            f"{path}: fingerprint format {version} is newer than this edgemlic reads "
            f"({FINGERPRINT_FORMAT_VERSION}); upgrade edgemlic"
        )
    if version < 1:
        raise EdgemlicError(f"{path}: fingerprint format {version} does not exist; rebuild the engine")
    return version


def _check_fields(data: dict[str, Any], path: Path) -> None:
    """Every required top-level field present, none unknown."""
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise EdgemlicError(f"{path}: engine fingerprint lacks {missing}; rebuild the engine")
    unknown = sorted(set(data) - {*_REQUIRED, *_OPTIONAL})
    if unknown:
        raise EdgemlicError(f"{path}: unknown engine fingerprint fields {unknown}; rebuild the engine")


def _fingerprint_from(data: dict[str, Any], version: int, path: Path) -> EngineFingerprint:
    """The typed fingerprint of a file's fields, each record's shape and types checked."""
    check = data.get("precision_check")
    if version == 1 and isinstance(check, dict):
        check = {k: v for k, v in check.items() if k != "convolutions"}
    card = ModelCard.from_dict(data["card"], f"{path} (model card)")
    try:
        return EngineFingerprint(
            engine=_record(EngineFile, data["engine"], "engine"),
            onnx=_record(OnnxSource, data["onnx"], "onnx"),
            io=_record(EngineTensors, data["io"], "io"),
            profile=_record(BuildProfile, data["profile"], "profile"),
            flags=_record(BuildFlags, data["flags"], "flags"),
            environment=_record(Environment, data["environment"], "environment"),
            card=card,
            cache_key=_value(data["cache_key"], str, "cache_key"),
            precision_check=None if check is None else _record(PrecisionCheck, check, "precision_check"),
            parity=_value(data.get("parity"), dict[str, Any] | None, "parity"),
            tf32=_value(data.get("tf32"), bool | None, "tf32"),
            edgemlic_version=_value(data.get("edgemlic_version", "unknown"), str, "edgemlic_version"),
            format_version=version,
        )
    except (_Malformed, EdgemlicError) as e:
        raise EdgemlicError(f"{path}: malformed engine fingerprint ({e}); rebuild the engine") from None


_REQUIRED = ("engine", "onnx", "precision", "io", "profile", "flags", "environment", "cache_key", "card")
_OPTIONAL = ("format_version", "edgemlic_version", "tf32", "precision_check", "parity")


class _Malformed(Exception):
    """A fingerprint field of the wrong shape; _fingerprint_from turns it into one line naming the file."""


def _record(cls: type, value: Any, name: str) -> Any:
    """`cls` from its JSON object, every field's type checked against `cls`'s annotations."""
    if not isinstance(value, dict):
        raise _Malformed(f"{name} is {_shown(value)}, not an object")
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(value) - set(declared))
    if unknown:
        raise _Malformed(f"{name} has unknown fields {unknown}")
    missing = [
        n
        for n, f in declared.items()
        if n not in value and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise _Malformed(f"{name} lacks {missing}")
    hints = get_type_hints(cls)
    for key, item in value.items():
        _value(item, hints[key], f"{name}.{key}")
    return cls(**value)


def _value(value: Any, hint: Any, name: str) -> Any:
    if not _is_a(value, hint):
        raise _Malformed(f"{name} is {_shown(value)}, not {_hint_name(hint)}")
    return value


def _is_a(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the annotated type (str, int, float, bool, None, dict[str, X], unions)."""
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(_is_a(value, arg) for arg in args)
    if origin is dict:
        return isinstance(value, dict) and all(
            _is_a(k, args[0]) and _is_a(v, args[1]) for k, v in value.items()
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_l4t_release(text: str) -> tuple[str | None, str | None]:
    """("R36.3.0", "6.x") from /etc/nv_tegra_release's first line, or (None, None) if not Jetson."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not match:
        return None, None
    major, revision = match.groups()
    return f"R{major}.{revision}", L4T_TO_JETPACK.get(major)


def read_device_model(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The device-tree model string ("NVIDIA Jetson Orin Nano Developer Kit"), or None without one."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode(errors="replace").strip() or None


def probe_environment(
    tensorrt_version: str,
    device: int = 0,
    *,
    tegra_release: Path = TEGRA_RELEASE_FILE,
    device_tree_model: Path = DEVICE_TREE_MODEL,
) -> Environment:
    """Facts about this machine's CUDA GPU `device`, read through the CUDA runtime Polygraphy loads."""
    from edgemlic.runtime import nvidia

    l4t, jetpack = (
        parse_l4t_release(tegra_release.read_text(errors="replace"))
        if tegra_release.is_file()
        else (None, None)
    )
    facts = nvidia.device_facts(device)
    return Environment(
        tensorrt=tensorrt_version,
        cuda_runtime=facts["cuda_runtime"],
        cuda_driver=facts["cuda_driver"],
        gpu_name=facts["gpu_name"],
        compute_capability=facts["compute_capability"],
        machine=platform.machine(),
        system=f"{platform.system()} {platform.release()}",
        l4t=l4t,
        jetpack=jetpack,
        device_model=read_device_model(device_tree_model),
        sm_count=facts.get("sm_count"),
        total_memory_mib=facts.get("total_memory_mib"),
    )
