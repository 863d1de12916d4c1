"""The house rules of ``roro_sdk``'s imports, checked on the source (no import is executed):

* no cycles between modules;
* no import from a lower layer up into a higher one (layers below, bottom up);
* no private name (``_x``) imported from another module: a name used across a module boundary is
  public, or it is not used there.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "roro_sdk"

# Bottom up. A module may import its own layer and the layers below it, never a layer above.
LAYERS: list[set[str]] = [
    {"_env", "_sync", "_files", "_pins", "_quiet", "_extras", "_version", "redaction", "errors", "types", "answers", "prompts", "tasks", "trajectories"},
    {"cache", "pool", "hf", "local", "defaults"},
    {"routers", "sim"},  # the sim bench is a provider plus its own oracle routers
    {"runtime", "scale"},  # scale: the Ray twin of runtime.arun_many, and the engine collect/eval/train use
    {"rubric", "judge", "rewards", "pairs", "collect", "structured", "trajectory_text"},
    {"policy", "train", "eval", "tree", "_cli_common"},
    {"testing", "cli", "serve", "_install", "__init__", "__main__"},
]


# Name-based dispatch from a spec string to the one class that implements it, imported only when
# that spec is used: the dependency is on a name the user typed, not on the module's design.
ALLOWED_UPWARD = {
    ("routers", "policy.router"): "make_router('policy:PATH') loads a PolicyRouter",
    ("tasks", "sim"): "load_dataset('sim:...') generates sim bench queries",
}


def _unit(module: str) -> str:
    """The layer unit of a dotted module name inside the package (``train.grpo`` -> ``train``)."""
    return module.split(".")[0]


def _layer(module: str) -> int:
    unit = _unit(module)
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"roro_sdk.{module} is in no layer of tests/test_import_graph.py: place it in LAYERS")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(current: str, is_pkg: bool, node: ast.ImportFrom) -> str | None:
    """The package-relative module an ImportFrom reads from, or None when it is outside the package."""
    if node.level == 0:
        mod = node.module or ""
        if mod == "roro_sdk" or mod.startswith("roro_sdk."):
            return mod[len("roro_sdk."):] if mod != "roro_sdk" else "__init__"
        return None
    base = current.split(".") if current != "__init__" else []
    if not is_pkg:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    return target or "__init__"


def _edges() -> list[tuple[str, str, str, int]]:
    """(importer, imported module, imported name or '', line) for every import inside the package."""
    modules = _modules()
    edges = []
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_pkg, node)
                if target is None:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target != "__init__" else alias.name
                    if sub in modules:  # `from . import judge`: the module itself
                        edges.append((name, sub, "", node.lineno))
                    else:
                        edges.append((name, target, alias.name, node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("roro_sdk."):
                        edges.append((name, alias.name[len("roro_sdk."):], "", node.lineno))
                    elif alias.name == "roro_sdk":
                        edges.append((name, "__init__", "", node.lineno))
    return [e for e in edges if e[1] in modules or e[1] == "__init__"]


def _is_inside(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in _edges():
        if dst != "__init__" and not _is_inside(src, dst):
            graph.setdefault(src, set()).add(dst)
    # Tarjan's strongly connected components: a component of more than one module is a cycle.
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles between modules: {cycles}"


def test_no_upward_imports():
    bad = sorted({f"roro_sdk/{src.replace('.', '/')}:{line} imports {dst} (layer {_layer(dst)} > {_layer(src)})"
                  for src, dst, _, line in _edges()
                  if dst != "__init__" and _layer(dst) > _layer(src) and (src, dst) not in ALLOWED_UPWARD})
    assert not bad, "imports from a lower layer up into a higher one:\n" + "\n".join(bad)


def test_package_root_is_imported_only_by_entry_points():
    # Modules inside the package import what they need from its modules, not from the public face
    # (that would make every module depend on every other one).
    bad = sorted({f"roro_sdk/{src.replace('.', '/')}:{line}" for src, dst, _, line in _edges()
                  if dst == "__init__" and _layer(src) < len(LAYERS) - 1})
    assert not bad, "imports of the package root from inside the package:\n" + "\n".join(bad)


def test_no_private_names_across_modules():
    bad = sorted({f"roro_sdk/{src.replace('.', '/')}:{line} imports {dst}.{name}"
                  for src, dst, name, line in _edges()
                  if name.startswith("_") and not name.startswith("__") and not _is_inside(src, dst)})
    assert not bad, "private names used across module boundaries (make them public or move them):\n" + "\n".join(bad)
