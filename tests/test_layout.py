"""The package's shape, read from its source: imports (top-level and inside functions) form
no cycle, no module is over ~400 lines, and no name with a leading underscore is used
outside the module that defines it (the package, the tests and the benchmarks)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ncjax"
MAX_LINES = 420


def _modules():
    return {p.stem: p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}


def _imports(path):
    """The ncjax modules a file imports, wherever in the file the import is."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ncjax"):
            if node.module == "ncjax":
                out |= {a.name for a in node.names}
            else:
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ncjax.")}
    return out


def test_no_import_cycle():
    mods = _modules()
    graph = {m: _imports(p) & set(mods) - {m} for m, p in mods.items()}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", " -> ".join(path + [m])
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_no_module_over_400_lines():
    long = {m: n for m, p in _modules().items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def _private_uses(path, own):
    """(line, name) where ``path`` reaches a leading-underscore name of an ncjax module
    other than ``own``: `module._name` on an imported ncjax module, or `from ncjax.x import
    _name`."""
    tree = ast.parse(path.read_text())
    aliases = {}
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ncjax"):
            for a in node.names:
                if node.module == "ncjax":
                    aliases[a.asname or a.name] = a.name
                elif a.name.startswith("_") and node.module.split(".")[-1] != own:
                    hits.append((node.lineno, f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ncjax.") and a.asname:
                    aliases[a.asname] = a.name.split(".")[1]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in aliases and aliases[node.value.id] != own):
            hits.append((node.lineno, f"{aliases[node.value.id]}.{node.attr}"))
    return hits


def test_no_private_name_used_outside_its_module():
    files = list(PACKAGE.glob("*.py")) + list((ROOT / "tests").glob("*.py")) + list(
        (ROOT / "benchmarks").rglob("*.py"))
    found = {str(p.relative_to(ROOT)): h for p in files if (h := _private_uses(p, p.stem))}
    assert not found, found


def test_importing_ncjax_changes_no_environment():
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = "import os, ncjax, ncjax.plot; print(repr(os.environ.get('XLA_FLAGS')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_each_loss_factory_takes_the_parameters_named_once():
    """``names.LOSS_PARAMETERS`` (what specs and the CLI read without JAX) lists the losses
    and, for each, exactly its factory's arguments."""
    import inspect

    from ncjax import losses, names
    assert set(losses.LOSSES) == set(names.LOSS_PARAMETERS)
    for name, factory in losses.LOSSES.items():
        assert tuple(inspect.signature(factory).parameters) == names.LOSS_PARAMETERS[name]


def test_show_reads_a_run_without_importing_jax(tmp_path):
    """``ncjax show``, and ``ncjax resume`` of a finished run, read only a run's index and
    its spec: they start without JAX, optax, orbax or matplotlib (a second and more of
    imports). On a damaged chunk show still says so in one line, and resume repairs it."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import TWO_CLUSTER
    (tmp_path / "s.toml").write_text(TWO_CLUSTER + "n_B = 20\nlam = 0.004\n[axes]\n"
                                     "seed = [0, 1]\n[run]\nchunk_size = 1\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "ncjax", "sweep", str(tmp_path / "s.toml"), "--out",
                    str(tmp_path / "r")], env=env, check=True, capture_output=True, timeout=300)
    code = ("import sys, ncjax.cli; rc = ncjax.cli.main([sys.argv[1], sys.argv[2]]); print(rc, "
            "[m for m in ('jax', 'optax', 'orbax', 'matplotlib') if m in sys.modules])")
    for command in ("show", "resume"):
        out = subprocess.run([sys.executable, "-c", code, command, str(tmp_path / "r")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.stdout.strip().endswith("0 []"), (out.stdout, out.stderr)
        assert "status converged 2" in out.stdout, out.stdout
    assert out.stderr.strip() == "ncjax: resuming: 2 of 2 configurations already done"
    e = json.loads((tmp_path / "r" / "index" / "1.json").read_text())
    victim = tmp_path / "r" / "chunks" / "1" / next(iter(e["files"]))
    victim.write_bytes(victim.read_bytes() + b"x")  # its quick check fails: verified in full
    out = subprocess.run([sys.executable, "-m", "ncjax", "show", str(tmp_path / "r")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "chunk 1 is damaged" in out.stderr and "ncjax resume" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "ncjax", "resume", str(tmp_path / "r")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "chunk 1 is damaged" in out.stderr, out.stderr
    assert "status converged 2" in out.stdout and (tmp_path / "r" / "damaged" / "1").is_dir()
