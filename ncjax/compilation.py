"""JAX's persistent compilation cache for ncjax's entry points, on by default.

Every new process compiles ncjax's programs again (seconds to tens of seconds on a CPU)
before its first result. With the cache, a program compiled once is loaded from disk by a
later process with the same program, JAX version and XLA flags. ``use_cache`` points
JAX's persistent compilation cache at the folder ``NCJAX_CACHE_DIR`` names
(``cache_dir``):

* unset, or ``on`` (1, true, yes, default): ``$XDG_CACHE_HOME/ncjax/jax``, else
  ``~/.cache/ncjax/jax``;
* ``NCJAX_CACHE_DIR=/a/folder``: that folder;
* ``off`` (0, false, no, none, or set empty): no cache;
* a helper process of ``ncjax.cores`` (``NCJAX_HELPER=i`` in its environment) uses the
  subfolder helper-i of that folder: JAX writes an entry in place and, with no size limit
  set, without a lock, so a process reading an entry that a sibling compiling the same
  program is writing finds it cut short (a warning, and a compile);
* a cache the user configured in JAX (``jax_compilation_cache_dir``, or the environment
  variable JAX_COMPILATION_CACHE_DIR) is left as it is, and so is its minimum compile
  time.

It changes JAX's configuration for the process, so it is called by the public entry points
(``ncjax.solve``, ``ncjax.thresholds``, a sweep) when they start, never on import. JAX
reads its cache settings at the first compilation of a process; ``use_cache`` resets that
reading, so it takes effect after computations that ran before it too.
"""

from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

from ncjax import cores

ENV = "NCJAX_CACHE_DIR"
OFF = frozenset({"off", "0", "false", "no", "none", ""})
ON = frozenset({"on", "1", "true", "yes", "default"})
# Programs that compile faster than this are not written (JAX's default is 1 s): ncjax's
# first solve compiles a dozen small programs of 0.1-1 s besides its large one.
MIN_COMPILE_SECONDS = 0.1


def cache_dir(environ=None) -> str | None:
    """The folder of ncjax's compilation cache that ``NCJAX_CACHE_DIR`` names (unset: the
    per-user folder), or None when it is off (module docstring); ``environ`` defaults to
    ``os.environ``."""
    env = os.environ if environ is None else environ
    value = env.get(ENV, "on").strip()
    if value.lower() in OFF:
        return None
    if value.lower() in ON:
        base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.path.join(base, "ncjax", "jax")
    else:
        path = os.path.expanduser(value)
    helper = env.get(cores.HELPER_ENV, "").strip()
    return os.path.join(path, f"helper-{helper}") if helper else path


def use_cache() -> str | None:
    """Turn JAX's persistent compilation cache on at ``cache_dir()`` when it names one and
    the user configured no cache of JAX's own; returns the folder in use (None: no cache).
    Idempotent."""
    current = jax.config.jax_compilation_cache_dir
    if current is not None:
        return current
    path = cache_dir()
    if path is None:
        return None
    _jax_cache.set_cache_dir(path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    _jax_cache.reset_cache()  # JAX read "no cache" at an earlier compilation, if any
    return path
