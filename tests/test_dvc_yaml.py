"""dvc.yaml's code dependencies cannot drift from the imports: each stage lists every gamerec module its script runs."""

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def module_file(name: str) -> Path | None:
    """The file of module `name` (a gamerec module or package), or None outside the project."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(path: Path) -> set[Path]:
    """The gamerec files `path` imports anywhere (top level or inside a function), packages' __init__ included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gamerec":
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from gamerec import model`
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "gamerec"}
    parents = {".".join(name.split(".")[:i]) for name in names for i in range(2, name.count(".") + 1)}
    return {file for file in map(module_file, names | parents) if file}


def closure(script: Path) -> set[Path]:
    """Every gamerec file that running `script` imports, directly or not."""
    seen, todo = set(), [script]
    while todo:
        for file in imported(todo.pop()) - seen:
            seen.add(file)
            todo.append(file)
    return seen


def uncovered(stages: dict) -> dict[str, list[str]]:
    """Per stage, the gamerec files its script imports that its deps do not cover (folders cover what is below)."""
    missing = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        script = REPO / next(word for word in stage["cmd"].split() if word.endswith(".py"))
        covered = set()
        for dep in stage.get("deps", []):
            if "${" in dep:
                continue  # data, named by params
            path = REPO / dep
            covered |= set(path.rglob("*.py")) if path.is_dir() else {path}
        top_package = SRC / "gamerec" / "__init__.py"  # imported by every stage, holds only the version
        lacking = sorted(str(p.relative_to(REPO)) for p in closure(script) - covered - {top_package})
        if lacking or script not in covered:
            missing[name] = lacking + ([] if script in covered else [str(script.relative_to(REPO))])
    return missing


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_every_stage_depends_on_each_module_its_script_imports():
    assert uncovered(stages()) == {}


def test_a_module_removed_from_a_stages_deps_is_reported():
    edited = stages()
    edited["evaluate"]["deps"].remove("src/gamerec/interactions.py")  # evaluate draws its AUC negatives there
    assert uncovered(edited) == {"evaluate": ["src/gamerec/interactions.py"]}


@pytest.mark.parametrize("name", ["train", "evaluate", "export"])
def test_the_closure_follows_imports_through_other_modules(name):
    script = REPO / "stages" / f"{name}.py"
    files = {str(p.relative_to(REPO)) for p in closure(script)}
    assert "src/gamerec/csr.py" in files and "src/gamerec/prepared.py" in files  # never imported by the script itself
    assert "src/gamerec/service.py" not in files  # serving is not part of the pipeline
