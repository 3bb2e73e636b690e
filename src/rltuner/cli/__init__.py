"""The ``rltuner`` command line: one module per sub-command, loaded only when that sub-command runs."""
