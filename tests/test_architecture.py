"""The layout is the architecture: layers without circles, enforced here.

* import-linter (``lint-imports``, contracts in setup.cfg ``[importlinter]``): the layers
  secureml core (errors < data < representations < models) < protocols.net | protocols.common <
  protocols.ot < protocols.mpc < protocols.krr | protocols.baselines < protocols.testing < attacks
  < bench < secureml.demo < secureml.commands < secureml.cli, plus the layers inside
  protocols.mpc and protocols.krr. Every import counts, also one inside a function.
* no import circle anywhere in the four packages (our own graph, so a circle between modules that
  no contract names is caught too);
* the CLI and the demo import public names only;
* the protocol layers (net, ot, mpc, krr) import project modules at module level only, so no
  function-level import can hide a circle again;
* protocols/ is split by layer (only common.py and testing.py stay flat).
See docs/architecture.md.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("secureml", "protocols", "attacks", "bench")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, package: str) -> list[tuple[ast.AST, str, list[str]]]:
    """(node, absolute module, imported names) of every import statement in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.append((node, base, [a.name for a in node.names]))
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for _, base, names in _imports(path, package):
            for target in [base] + [f"{base}.{n}" for n in names]:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                # a package's __init__ is entered by every import of its submodules: not an edge
                if target and target != mod and mods[target].name != "__init__.py":
                    edges[mod].add(target)
    return edges


def test_import_linter_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports not installed (pip install -e .[test])")
    res = subprocess.run([exe, "--no-cache", str(ROOT / "setup.cfg")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_no_import_circles() -> None:
    edges = _graph()
    # Tarjan's strongly connected components, iteratively (deep graphs, no recursion limit)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    circles.append(sorted(comp))
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_circle_finder_finds_a_circle(tmp_path, monkeypatch) -> None:
    """The circle test can fail: a two-module circle in a scratch package is reported."""
    pkg = tmp_path / "bench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from bench import b\n")
    (pkg / "b.py").write_text("def f():\n    from bench.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("bench",))
    with pytest.raises(AssertionError, match="bench.a <-> bench.b"):
        test_no_import_circles()


def test_cli_and_demo_use_public_names_only() -> None:
    files = [ROOT / "secureml" / "cli.py", ROOT / "secureml" / "demo.py",
             *sorted((ROOT / "secureml" / "commands").rglob("*.py"))]
    bad = []
    for path in files:
        for node, base, names in _imports(path, "secureml.commands"):
            if base.startswith(("secureml.commands", "secureml.cli", "secureml.demo")):
                continue  # the CLI layer's own helpers (e.g. commands/_gnn_extract.py)
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in base.split(".") if p.startswith("_") and not p.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {base}.{private[0]}")
    assert not bad, bad


#: function-level imports that stay, and why
LAZY_ALLOWED = {
    "attacks/defenses/report.py": "DP-SGD (torch, Opacus) loads only when the report is asked for its kkt row",
    "attacks/targets.py": "protocols.baselines.fhe needs TenSEAL; without it the FHE target reports "
                          "EngineUnavailable instead of breaking every attack",
    "protocols/baselines/fhe/measure.py": "a measurement script run by hand",
    "secureml/models/__init__.py": "build_model recipes import their estimator module when asked",
    "secureml/representations/base.py": "imports sibling representation modules to find registered classes",
}


def test_library_layers_import_at_module_level() -> None:
    """Protocols, attacks and the secureml core import project modules at module level only.

    The CLI layer (commands, demo) and bench scripts may import lazily: ``secureml --help`` stays
    fast, and a benchmark sets its thread counts before it loads torch.
    """
    bad = []
    for pkg in ("protocols", "attacks", "secureml/data", "secureml/models", "secureml/representations"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if str(path.relative_to(ROOT)) in LAZY_ALLOWED:
                continue
            for fn in ast.walk(ast.parse(path.read_text())):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    mod = node.module if isinstance(node, ast.ImportFrom) else (
                        node.names[0].name if isinstance(node, ast.Import) else None)
                    if mod and mod.split(".")[0] in PACKAGES:
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {mod} inside {fn.name}()")
    assert not bad, bad


def test_protocols_split_by_layer() -> None:
    layers = {p.parent.name for p in (ROOT / "protocols").glob("*/__init__.py")}
    assert {"net", "ot", "mpc", "krr", "baselines"} <= layers
    flat = {p.name for p in (ROOT / "protocols").glob("*.py")} - {"__init__.py"}
    assert flat <= {"common.py", "testing.py"}, flat
