"""Methods built on the core that do not fit the one training loop's contract.

* :mod:`~kd_lib.methods.data_free` - transfer sets synthesised from the teacher (DeepInversion, DAFL);
* :mod:`~kd_lib.methods.pruning` - pruning a teacher into its student's initialisation.
"""
