"""The book's experiment kit: what the chapters use around kd_lib's core, not needed to distil.

* :mod:`~kd_lib.lab.notebook` - the setup cell (numerics, seeds, device), seed offsets, ``glue``;
* :mod:`~kd_lib.lab.numerics` - portable (AVX2-pinned) CPU numerics for exact re-execution;
* :mod:`~kd_lib.lab.sweep` - many seeded trainings, tables and learning curves;
* :mod:`~kd_lib.lab.stats` - paired differences and t intervals over seeds;
* :mod:`~kd_lib.lab.evaluation` - fidelity, temperature scaling;
* :mod:`~kd_lib.lab.efficiency`, :mod:`~kd_lib.lab.robustness` - MACs, energy, noise;
* :mod:`~kd_lib.lab.widgets`, :mod:`~kd_lib.lab.plots` - sliders, and their static scrubbers.
"""
from .notebook import DATA_DIR, glue, seeds, setup_notebook, shifted_seed

__all__ = ["DATA_DIR", "glue", "seeds", "setup_notebook", "shifted_seed"]
