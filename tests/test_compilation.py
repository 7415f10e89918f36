"""The compilation cache ncjax turns on (``ncjax.compilation``): where it is, that a second
process loads what the first compiled, and that it is on by default, can be moved, turned
off, or left to a cache the user configured in JAX. Each case is a fresh process, as
a user's is."""

import json
import os
import subprocess
import sys

import pytest

from ncjax import compilation

# one small solve; prints JAX's count of cache hits (its monitoring events) and the folder
SOLVE = """
import json, jax, ncjax
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
ncjax.configure_cpu()
r = ncjax.solve([3.0, 1.0, 1.0], 0.01, 0.01, method="convex", dtype="float64")
print(json.dumps({"hits": len(hits), "dir": jax.config.jax_compilation_cache_dir,
                  "status": str(r.status)}))
"""


def _run(env_changes: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "NCJAX_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(env_changes)
    p = subprocess.run([sys.executable, "-c", SOLVE], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def _entries(folder) -> set:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def test_where_the_cache_is():
    home = os.path.expanduser("~")
    for on in ({}, {"XDG_CACHE_HOME": ""}, *({"NCJAX_CACHE_DIR": v} for v in
                                             ("on", "1", "true", "yes", "default", "ON"))):
        assert compilation.cache_dir(on) == os.path.join(home, ".cache", "ncjax", "jax"), on
    assert compilation.cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/ncjax/jax"
    assert compilation.cache_dir({"NCJAX_CACHE_DIR": "on", "XDG_CACHE_HOME": "/x"}) == \
        "/x/ncjax/jax"
    assert compilation.cache_dir({"NCJAX_CACHE_DIR": "~/c", "XDG_CACHE_HOME": "/x"}) == \
        os.path.join(home, "c")
    for off in ("off", "OFF", "0", "false", "no", "none", "", " off "):
        assert compilation.cache_dir({"NCJAX_CACHE_DIR": off}) is None, off
    # a helper process of ncjax.cores: a subfolder of its own, no cache when off
    assert compilation.cache_dir({"NCJAX_CACHE_DIR": "/c", "NCJAX_HELPER": "1"}) == \
        "/c/helper-1"
    assert compilation.cache_dir({"NCJAX_HELPER": "1"}) == os.path.join(
        home, ".cache", "ncjax", "jax", "helper-1")
    assert compilation.cache_dir({"NCJAX_CACHE_DIR": "off", "NCJAX_HELPER": "1"}) is None


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    folder = tmp_path / "cache"
    first = _run({"NCJAX_CACHE_DIR": str(folder)})
    assert first["status"] == "converged" and first["dir"] == str(folder)
    written = _entries(folder)
    assert any(n.startswith("jit_") for n in written), written
    second = _run({"NCJAX_CACHE_DIR": str(folder)})
    assert second["hits"] > 0 and second["status"] == "converged"
    assert _entries(folder) == written  # nothing compiled again


@pytest.mark.parametrize("how", ["off", "unset", "jax"])
def test_on_by_default_off_or_the_users_own_cache(tmp_path, how):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    env = {"off": {"NCJAX_CACHE_DIR": "off"}, "unset": {"HOME": str(ours)},
           "jax": {"NCJAX_CACHE_DIR": str(ours), "JAX_COMPILATION_CACHE_DIR": str(theirs)}}
    got = _run(env[how])
    if how == "unset":  # on by default, in the user's own cache folder
        default = ours / ".cache" / "ncjax" / "jax"
        assert got["dir"] == str(default) and _entries(default)
        return
    assert not ours.exists()
    if how == "off":
        assert got["dir"] is None and got["hits"] == 0
    else:
        assert got["dir"] == str(theirs)
