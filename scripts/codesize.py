"""Code size of the project's Python: lines per module, the largest classes and functions.

Usage: python scripts/codesize.py [--root DIR] [--json] [PACKAGE ...]

Lines per module are physical lines (``wc -l``) for every ``*.py`` in each package folder given
(default: the service and tool packages that exist under the root). The largest class and function
are measured with ``ast`` (``end_lineno - lineno + 1``, decorators excluded) over every package
given plus ``tests/``, ``bench/`` and ``scripts/`` (``--packages-only``: the packages alone);
methods count as functions and nested functions count on their own too.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_PACKAGES = ("common", "gateway", "mixer", "recorder", "brigade", "loadgen", "inspector")
EXTRA_DIRS = ("tests", "bench", "scripts")


@dataclass(frozen=True)
class Span:
    """A class or function and how many lines it spans."""

    kind: str
    name: str
    path: str
    lines: int


def module_lines(root: Path, package: str) -> dict[str, int]:
    """Lines of each module in one package folder, by path relative to the root."""
    folder = root / package
    return {
        str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(folder.rglob("*.py"))
    }


def spans(root: Path, path: Path) -> list[Span]:
    """Every class and function in one file with its length in lines."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Span] = []
    relative = str(path.relative_to(root))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            end = node.end_lineno if node.end_lineno is not None else node.lineno
            found.append(Span(kind, node.name, relative, end - node.lineno + 1))
    return found


def measure(root: Path, packages: list[str], top: int, extra: bool = True) -> dict[str, object]:
    """The whole report as plain data."""
    per_package: dict[str, dict[str, int]] = {}
    for package in packages:
        if (root / package).is_dir():
            per_package[package] = module_lines(root, package)
    files: list[Path] = []
    for folder in [*per_package, *(EXTRA_DIRS if extra else ())]:
        if (root / folder).is_dir():
            files.extend(sorted((root / folder).rglob("*.py")))
    everything = [span for path in files for span in spans(root, path)]
    classes = sorted((s for s in everything if s.kind == "class"), key=lambda s: -s.lines)
    functions = sorted((s for s in everything if s.kind == "function"), key=lambda s: -s.lines)
    return {
        "packages": {
            name: {"total": sum(modules.values()), "modules": modules}
            for name, modules in per_package.items()
        },
        "largest_classes": [asdict(span) for span in classes[:top]],
        "largest_functions": [asdict(span) for span in functions[:top]],
    }


def render(report: dict[str, object]) -> str:
    """The report as Markdown-ish text."""
    out: list[str] = []
    packages = report["packages"]
    assert isinstance(packages, dict)
    for name, data in packages.items():
        out.append(f"{name}/ {data['total']} lines")
        for module, lines in data["modules"].items():
            out.append(f"  {lines:5d}  {module}")
    for key in ("largest_classes", "largest_functions"):
        out.append(key.replace("_", " ") + ":")
        rows = report[key]
        assert isinstance(rows, list)
        for row in rows:
            out.append(f"  {row['lines']:5d}  {row['path']}::{row['name']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=list(DEFAULT_PACKAGES))
    parser.add_argument("--root", type=Path, default=Path())
    parser.add_argument("--top", type=int, default=5, help="how many classes and functions")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--packages-only",
        action="store_true",
        help="largest class/function over the packages only (not tests/, bench/, scripts/)",
    )
    args = parser.parse_args(argv)
    report = measure(args.root.resolve(), list(args.packages), args.top, not args.packages_only)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
