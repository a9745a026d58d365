"""The import rule of docs/architecture.md, checked on the source: services never import each
other, `ecgcommon` imports no service, nothing imports `models`, `models` imports only
`ecgcommon` (the model contract lives in `ecgcommon.model_contract`), and no run-time package
imports torch. Imports are read with `ast` from every file, function-level imports and
`importlib.import_module("...")` calls with a literal name included."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"ecgcommon", "streamer", "detector", "alerting", "models", "bench", "fuzz", "scripts"}
SERVICES = {"streamer", "detector", "alerting"}
TOOLS = {"ecgcommon", *SERVICES, "bench", "fuzz", "scripts"}  # what benches and tools may use
# package -> the project packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "ecgcommon": set(),
    "streamer": {"ecgcommon"},
    "detector": {"ecgcommon"},
    "alerting": {"ecgcommon"},
    "models": {"ecgcommon"},  # the model contract is ecgcommon.model_contract
    "bench": TOOLS,  # benches drive several services, never models
    "fuzz": TOOLS,
    "scripts": TOOLS,
}
TRAIN_ONLY = {"torch", "sklearn", "onnx", "onnxscript"}  # matplotlib: optional PDF reports
RUNTIME = ("ecgcommon", "streamer", "detector", "alerting")
DYNAMIC = {"import_module", "__import__"}  # importlib.import_module("x"), __import__("x")


def _dynamic_import(node: ast.Call) -> str | None:
    """The literal module name of an `import_module("x")` / `__import__("x")` call, else None."""
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name not in DYNAMIC or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imports_of(source: str, filename: str = "<source>") -> set[str]:
    """Top-level names of every module imported anywhere in `source` (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and (module := _dynamic_import(node)):
            names.add(module.split(".")[0])
    return names


def _imports(path: Path) -> set[str]:
    return imports_of(path.read_text(), str(path))


def violations(package: str, names: set[str]) -> set[str]:
    """The project packages among `names` that `package` must not import."""
    return names & PROJECT - {package} - ALLOWED[package]


def _files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no source found for {package}"
    return files


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _files(package)
        for name in sorted(violations(package, _imports(path)))
    ]
    assert not bad, "\n".join(bad)


def test_nothing_imports_models_and_services_import_no_service() -> None:
    """The two halves of the rule, stated directly on the table above."""
    assert all("models" not in allowed for allowed in ALLOWED.values())
    for service in SERVICES:
        assert not ALLOWED[service] & (SERVICES | {"models"}), service
    assert not ALLOWED["ecgcommon"]


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


def test_the_model_contract_imports_with_numpy_alone() -> None:
    """onnxruntime (opened lazily by the scorer) and torch are not needed to import it."""
    modules = sorted(p.stem for p in (ROOT / "ecgcommon" / "model_contract").glob("[!_]*.py"))
    assert {"adapter", "features", "manifest", "scorer", "beat_classes"} <= set(modules)
    code = (
        "import sys\n"
        "for m in ('onnxruntime', 'torch', 'detector', 'models'):\n"
        "    sys.modules[m] = None  # importing any of these now raises ImportError\n"
        + "".join(f"import ecgcommon.model_contract.{m}\n" for m in modules)
        + "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from alerting.policy import AlarmPolicy\n    import torch\n")
    assert {"alerting", "torch"} <= _imports(bad)


@pytest.mark.parametrize(
    "package, source, expected",
    [
        ("detector", "def f():\n    from alerting.policy import AlarmPolicy\n", {"alerting"}),
        ("alerting", "import detector.engine as e\n", {"detector"}),
        ("streamer", "class A:\n    def m(self):\n        import alerting\n", {"alerting"}),
        ("ecgcommon", "from streamer.core import Replay\n", {"streamer"}),
        ("bench", "from models.train import train\n", {"models"}),
        ("scripts", "import importlib\nm = importlib.import_module('models.nets')\n", {"models"}),
        ("models", "from detector.pipeline import Pipeline\n", {"detector"}),
        ("detector", "from ecgcommon.model_contract.adapter import PatientAdapter\n", set()),
        ("bench", "from detector.engine import DetectorEngine\nimport alerting\n", set()),
    ],
)
def test_the_rule_flags_a_synthetic_source(package: str, source: str, expected: set[str]) -> None:
    """Positive control: the same checker the tree is held to flags a forbidden import."""
    assert violations(package, imports_of(source)) == expected
