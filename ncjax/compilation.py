"""JAX's persistent compilation cache, on by default for ncjax's entry points.

Every new process would otherwise compile ncjax's programs again (seconds to tens of
seconds on a CPU) before its first result. ``use_cache`` points JAX's persistent
compilation cache at a per-user folder, so that a program compiled once is loaded from disk
by every later process with the same program, JAX version and XLA flags:

* the folder is ``$NCJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/ncjax/jax``, else
  ``~/.cache/ncjax/jax`` (``cache_dir``);
* ``NCJAX_CACHE_DIR=off`` (or 0, false, no, none, empty) turns it off;
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

ENV = "NCJAX_CACHE_DIR"
OFF = frozenset({"off", "0", "false", "no", "none", ""})
# Programs that compile faster than this are not written (JAX's default is 1 s): ncjax's
# first solve compiles a dozen small programs of 0.1-1 s besides its large one.
MIN_COMPILE_SECONDS = 0.1


def cache_dir(environ=None) -> str | None:
    """The folder of ncjax's compilation cache, or None when ``NCJAX_CACHE_DIR`` turns it
    off (module docstring); ``environ`` defaults to ``os.environ``."""
    env = os.environ if environ is None else environ
    if ENV in env:
        value = env[ENV].strip()
        return None if value.lower() in OFF else os.path.expanduser(value)
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ncjax", "jax")


def use_cache() -> str | None:
    """Turn JAX's persistent compilation cache on at ``cache_dir()`` unless it is off or
    the user configured JAX's own; returns the folder in use (None: no cache). Idempotent."""
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
