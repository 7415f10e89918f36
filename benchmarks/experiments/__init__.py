"""Experiments beside the harness: the one-kernel Adam step and the step probe."""
