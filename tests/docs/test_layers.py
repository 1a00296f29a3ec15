"""The package map of docs/design.md is true: every import of the code is one of its arrows.

The map lists, for each unit (a stage package of `pipeline/`, `pipeline.demo`, `flows`, `cli`, `model`), the units
it may import. Imports inside functions count too: a lazy import is still an arrow.
"""

import ast
from pathlib import Path

import pytest

from tests.fixtures.data_files import REPO_ROOT

ROOT = REPO_ROOT
DESIGN = ROOT / "docs" / "design.md"
UNITS_BY_PREFIX = (
    "pipeline.inference",
    "pipeline.training",
    "pipeline.extraction",
    "pipeline.sources",
    "pipeline.core",
)


def documented_map() -> dict[str, set[str]]:
    text = DESIGN.read_text()
    block = text.split("<!-- package-map:", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    arrows = {}
    for line in block.strip().splitlines():
        unit, _, targets = line.partition("->")
        arrows[unit.strip()] = {name.strip() for name in targets.split(",") if name.strip()}
    return arrows


def unit_of(module: str) -> str | None:
    """The map's unit of a dotted module name of this project; None for anything else."""
    for prefix in UNITS_BY_PREFIX:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    if module == "pipeline.demo":
        return "pipeline.demo"
    head = module.split(".")[0]
    return head if head in ("flows", "cli", "model") else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Every module the file `path` of module `name` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")[: -node.level or None]
                base = ".".join([*package, base] if base else package)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pipeline import x` imports pipeline.x
    return found


def code_files() -> list[Path]:
    return [ROOT / "cli.py", *sorted((ROOT / "pipeline").rglob("*.py")), *sorted((ROOT / "flows").rglob("*.py")),
            *sorted((ROOT / "model").rglob("*.py"))]  # fmt: skip


def wrong_arrows(modules: dict[str, Path]) -> list[str]:
    """The imports of `modules` (dotted name -> file) that are not arrows of the map."""
    arrows = documented_map()
    wrong = []
    for name, path in modules.items():
        source = unit_of(name)
        if source is None:  # pipeline/__init__.py: the face of the whole package
            continue
        for imported in imports_of(path, name):
            target = unit_of(imported)
            if target is not None and target != source and target not in arrows[source]:
                wrong.append(f"{name} imports {imported} ({source} -> {target} is not on the map)")
    return wrong


def test_every_import_is_an_arrow_of_the_map():
    wrong = wrong_arrows({module_name(path): path for path in code_files()})
    assert not wrong, "\n".join(wrong)


def test_every_package_is_on_the_map():
    arrows = documented_map()
    stages = {f"pipeline.{p.name}" for p in (ROOT / "pipeline").iterdir() if (p / "__init__.py").is_file()}
    top_modules = {f"pipeline.{p.stem}" for p in (ROOT / "pipeline").glob("*.py") if p.stem != "__init__"}
    assert stages | top_modules | {"flows", "cli", "model"} == set(arrows)
    assert all(target in arrows for targets in arrows.values() for target in targets)


def test_the_map_points_one_way():
    """No cycles: following the arrows from any unit never comes back to it."""
    arrows = documented_map()

    def reachable(unit: str, seen: set[str]) -> set[str]:
        for target in arrows[unit] - seen:
            seen.add(target)
            reachable(target, seen)
        return seen

    assert all(unit not in reachable(unit, set()) for unit in arrows)


@pytest.mark.parametrize(
    "unit, forbidden",
    [
        ("model", {"pipeline", "flows", "cli", "prefect", "h5py", "zarr", "cv2", "typer"}),
        ("pipeline", {"prefect", "prefect_dask", "flows", "cli", "typer"}),
    ],
)
def test_libraries_stay_in_their_layer(unit, forbidden):
    files = sorted((ROOT / unit).rglob("*.py"))
    found = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in imports_of(path, module_name(path))
        if name.split(".")[0] in forbidden
    }
    assert not found, found


def test_a_wrong_arrow_would_be_caught(tmp_path):
    """The check can fail: an upward import in a stage package is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from pipeline.training.config import TrainConfig\n")
    wrong = wrong_arrows({"pipeline.core.probe": probe})
    assert wrong and all("(pipeline.core -> pipeline.training is not on the map)" in line for line in wrong)
