"""The Jetson install keeps JetPack's numpy 1.x: pip resolves it for linux aarch64, wheels only, no torch.

NVIDIA's wheels for JetPack 6 (TensorRT's Python bindings, the onnxruntime-gpu wheel) are built against
numpy 1.x, so the README's Jetson steps install `edgemlic[tensorrt]` or `edgemlic[onnx,tensorrt]` with the
constraint `numpy<2`. Here pip resolves exactly that, without installing anything, for JetPack 6 (Ubuntu
22.04: Python 3.10, glibc 2.35) and JetPack 7 (Ubuntu 24.04: Python 3.12, glibc 2.39), through this
machine's pip configuration (index, proxy, certificates), as the Jetson would.

pip evaluates environment markers for the interpreter it runs in, not for --platform and --python-version
(its report says so in "environment"), so the project's requirements are evaluated here for the Jetson,
passed without markers, and the resolution is walked again with the Jetson's markers: every requirement
that applies there must be met by the version pip chose. When no index can be reached the test skips.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from edgemlic.errors import EXTRAS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
JETPACK_NUMPY = Version("1.26.4")  # the numpy of JetPack 7's Ubuntu 24.04, the newest 1.x
NOT_ON_A_JETSON = {"torch", "torchvision", "onnx", "ml-dtypes", "tensorrt"}
"""torch is the training stack; onnx needs ml_dtypes, which needs numpy 2; TensorRT comes with JetPack."""


@dataclass(frozen=True)
class Jetson:
    jetpack: str
    python: str  # the Ubuntu release's python3
    glibc_minor: int

    @property
    def python_version(self) -> str:
        return ".".join(self.python.split(".")[:2])

    def platforms(self) -> list[str]:
        """Every manylinux tag this glibc runs: pip does not expand manylinux_2_x to older ones."""
        return [f"manylinux_2_{m}_aarch64" for m in range(self.glibc_minor, 16, -1)] + [
            "manylinux2014_aarch64"
        ]

    def tags(self) -> set[Tag]:
        version = tuple(map(int, self.python.split(".")[:2]))
        platforms = self.platforms()
        return {
            *cpython_tags(version, platforms=platforms),
            *compatible_tags(version, "cp" + "".join(map(str, version)), platforms=platforms),
        }

    def markers(self, extra: str = "") -> dict[str, str]:
        return {
            "implementation_name": "cpython",
            "implementation_version": self.python,
            "os_name": "posix",
            "platform_machine": "aarch64",
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": self.python,
            "python_version": self.python_version,
            "sys_platform": "linux",
            "extra": extra,
        }


JETSONS = [Jetson("JetPack 6", "3.10.12", 35), Jetson("JetPack 7", "3.12.3", 39)]
INSTALLS = [("tensorrt",), ("onnx", "tensorrt")]


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """The base requirements and those of `extras`, following edgemlic[...] inside them, as pyproject.toml
    states them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements, pending, seen = [Requirement(r) for r in project["dependencies"]], list(extras), set()
    while pending:
        extra = pending.pop()
        if extra not in seen:
            seen.add(extra)
            for requirement in map(Requirement, project["optional-dependencies"][extra]):
                if canonicalize_name(requirement.name) == "edgemlic":
                    pending.extend(requirement.extras)
                else:
                    requirements.append(requirement)
    return requirements


def jetson_requirements(extras: tuple[str, ...], jetson: Jetson) -> list[Requirement]:
    """The project's requirements that apply on the Jetson."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert SpecifierSet(project["requires-python"]).contains(jetson.python)
    return [
        r for r in project_requirements(extras) if r.marker is None or r.marker.evaluate(jetson.markers())
    ]


def without_marker(requirement: Requirement) -> str:
    """name[extras]specifier: the marker was evaluated for the Jetson, pip would evaluate it for this host."""
    bare = Requirement(str(requirement))
    bare.marker = None
    return str(bare)


def resolve(requirements: list[Requirement], jetson: Jetson, folder: Path) -> dict:
    """pip's installation report for `requirements` on the Jetson under `numpy<2`; nothing is installed."""
    (folder / "constraints.txt").write_text("numpy<2\n")
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--disable-pip-version-check",
        "--retries=1",
        "--timeout=30",
        f"--target={folder / 'target'}",  # pip takes --platform only with --target; a dry run writes nothing
        f"--report={folder / 'report.json'}",
        "--only-binary=:all:",
        "--implementation=cp",
        f"--python-version={jetson.python_version}",
        *(f"--platform={p}" for p in jetson.platforms()),
        f"--constraint={folder / 'constraints.txt'}",
        *sorted({without_marker(r) for r in requirements}),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        unreachable = [line for line in result.stderr.splitlines() if "Retrying (Retry(" in line]
        if unreachable:
            pytest.skip(f"no package index reachable from here: {unreachable[-1].strip()[:300]}")
        raise AssertionError(f"pip cannot resolve the {jetson.jetpack} install:\n{result.stderr}")
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Resolved:
    versions: dict[str, Version]  # what the Jetson needs, by canonical name
    numpy_requirements: list[tuple[str, Requirement]]  # (who, requirement) for every numpy requirement


def walk(report: dict, roots: list[Requirement], jetson: Jetson) -> Resolved:
    """What the Jetson installs from the resolution, following requirements with the Jetson's markers."""
    chosen = {canonicalize_name(item["metadata"]["name"]): item["metadata"] for item in report["install"]}
    versions, numpy_requirements, done = {}, [], set()
    pending = [("edgemlic", r) for r in roots]
    while pending:
        who, requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        assert name in chosen, f"{who} needs {requirement} on the {jetson.jetpack}, and pip left it out"
        version = Version(chosen[name]["version"])
        assert requirement.specifier.contains(version, prereleases=True), f"{who}: {requirement} != {version}"
        if name == "numpy":
            numpy_requirements.append((who, requirement))
        key = (name, frozenset(requirement.extras))
        if key in done:
            continue
        done.add(key)
        versions[name] = version
        for text in chosen[name].get("requires_dist") or []:
            dependency = Requirement(text)
            if dependency.marker is None or any(
                dependency.marker.evaluate(jetson.markers(extra)) for extra in ("", *requirement.extras)
            ):
                pending.append((f"{name} {version}", dependency))
    return Resolved(versions, numpy_requirements)


@pytest.mark.parametrize("jetson", JETSONS, ids=lambda j: j.jetpack.replace(" ", ""))
def test_the_jetson_install_resolves_with_numpy_1_and_no_torch(jetson, tmp_path):
    everything = sorted({extra for install in INSTALLS for extra in install})
    report = resolve(jetson_requirements(tuple(everything), jetson), jetson, tmp_path)
    # What one resolution gives a larger install is a valid resolution of each smaller one.
    for item in report["install"]:
        url = item["download_info"]["url"]
        assert url.endswith(".whl"), f"not a binary wheel: {url}"
        _, _, _, tags = parse_wheel_filename(url.rsplit("/", 1)[-1])
        assert tags & jetson.tags(), f"{url} does not install on the {jetson.jetpack}"
    for extras in INSTALLS:
        resolved = walk(report, jetson_requirements(extras, jetson), jetson)
        install = f"edgemlic[{','.join(extras)}] on {jetson.jetpack}"
        assert resolved.versions["numpy"].major == 1, install
        assert not NOT_ON_A_JETSON & set(resolved.versions), (
            f"{install}: {NOT_ON_A_JETSON & set(resolved.versions)}"
        )
        numpy_2_only = [
            f"{who} needs {r}"
            for who, r in resolved.numpy_requirements
            if not r.specifier.contains(JETPACK_NUMPY)
        ]
        assert not numpy_2_only, f"{install}: {numpy_2_only}"
        assert "polygraphy" in resolved.versions
        assert ("onnxruntime" in resolved.versions) == ("onnx" in extras)


def test_each_optional_module_names_an_extra_that_installs_it():
    """The one-line error for a missing module names an extra (errors.EXTRAS); that extra must install it,
    now that onnx comes with `train` only."""
    distributions = importlib.metadata.packages_distributions()
    for module, extra in EXTRAS.items():
        providers = {canonicalize_name(d) for d in distributions.get(module, [module])}
        installed = {canonicalize_name(r.name) for r in project_requirements((extra,))}
        assert providers & installed, f"edgemlic[{extra}] does not install {module} ({sorted(providers)})"
