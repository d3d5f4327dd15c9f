"""The host package's rooms (README, "Architecture"): imports point one way, and no module
imports itself back through another.  Read from the sources with ast, so a new module or a new
import is checked without being listed here."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "safesignal"

# Modules every room may use: the exception root, tool finding, the extras check, the firmware build.
BASE = {"safesignal", "errors", "tools", "extras", "firmware_build"}
# room -> the rooms it may import (besides itself and BASE); the top-level apps come last.
ALLOWED: dict[str, set[str]] = {
    "link": set(),
    "pki": set(),
    "nvs": set(),
    "alerts": {"pki"},
    "provisioning": {"link", "pki", "alerts"},
    "sim": {"nvs"},
    "dashboard": {"alerts", "pki"},
    "cli": {"link", "pki", "nvs", "alerts", "provisioning", "sim", "dashboard"},
    "demo": {"pki", "alerts", "sim", "provisioning", "link", "dashboard"},
    "__main__": {"cli"},
}


def modules() -> dict[str, Path]:
    found = {}
    for p in PKG.rglob("*.py"):
        if "stubs" in p.parts:  # MicroPython code the virtual device runs, not host code
            continue
        parts = ("safesignal", *p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = p
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the safesignal modules it imports (at any depth: lazy imports count too)."""
    out: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.split(".")[0] == "safesignal":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out[name].add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                out[name].update(a.name for a in node.names if a.name.split(".")[0] == "safesignal")
            elif isinstance(node, ast.ImportFrom) and node.level:
                out[name].add("relative import")  # the house style is absolute imports
    return out


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "safesignal"


def test_rooms_import_one_way() -> None:
    mods = modules()
    assert {"safesignal.cli.base", "safesignal.link.session", "safesignal.nvs.format"} <= set(mods)
    wrong = []
    for src, targets in imports(mods).items():
        assert "relative import" not in targets, f"{src} uses a relative import"
        for tgt in targets:
            a, b = room(src), room(tgt)
            if a == b or b in BASE:
                continue
            if b not in ALLOWED.get(a, set()):
                wrong.append(f"{src} -> {tgt}")
    assert not wrong, "imports against the direction of the rooms:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    graph = imports(modules())
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, path + [nxt])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])
