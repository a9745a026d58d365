"""The import rule of docs/architecture.md, checked on the source: services never import each
other, `ecgcommon` imports no service, nothing at run time imports `models` or torch."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"ecgcommon", "streamer", "detector", "alerting", "models", "bench", "fuzz", "scripts"}
# package -> the project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "ecgcommon": set(),
    "streamer": {"ecgcommon"},
    "detector": {"ecgcommon"},
    "alerting": {"ecgcommon"},
    "models": {"ecgcommon", "detector"},  # training uses the run-time scorer and features
}
TRAIN_ONLY = {"torch", "sklearn", "onnx", "onnxscript"}  # matplotlib: optional PDF reports
RUNTIME = ("ecgcommon", "streamer", "detector", "alerting")


def _imports(path: Path) -> set[str]:
    """Top-level names of every module imported anywhere in the file (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no source found for {package}"
    return files


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    bad = []
    for path in _files(package):
        for name in _imports(path) & PROJECT - {package} - ALLOWED[package]:
            bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", RUNTIME)
def test_run_time_code_never_imports_training_libraries(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(package)
        for name in sorted(_imports(path) & TRAIN_ONLY)
    ]
    assert not bad, "\n".join(bad)


def test_run_time_dependencies_leave_torch_to_the_train_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert not runtime & TRAIN_ONLY
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["train"])


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from alerting.policy import AlarmPolicy\n    import torch\n")
    assert {"alerting", "torch"} <= _imports(bad)
