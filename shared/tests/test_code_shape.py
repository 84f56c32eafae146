"""The skeleton's size limits (CONTRIBUTING.md): in `services/`, no function over 60 lines and no class
over 200, so a rule has one obvious home and every piece fits on a screen or two."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_MAX, CLASS_MAX = 60, 200


def _sizes() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted((ROOT / "services").glob("*/src/aftersales/*/**/*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                assert node.end_lineno is not None
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                found.append(
                    (
                        kind,
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}",
                        node.end_lineno - node.lineno + 1,
                    )
                )
    return found


def test_the_size_check_sees_the_services() -> None:
    sizes = _sizes()
    assert sum(1 for kind, _, _ in sizes if kind == "class") > 20
    assert sum(1 for kind, _, _ in sizes if kind == "function") > 200


def test_no_function_over_60_lines_and_no_class_over_200_in_services() -> None:
    limit = {"function": FUNCTION_MAX, "class": CLASS_MAX}
    too_big = [f"{kind} {where}: {n} lines" for kind, where, n in _sizes() if n > limit[kind]]
    assert too_big == []
