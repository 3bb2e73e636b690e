"""``rltuner sweep``: a hyperparameter search over tuning runs on Ray Tune (docs/sweep.md).

Ray-free parts: the search space (``space``), the goal deficit and the Pareto front (``objective``), one
trial (``trial``) and the result files (``results``). Only ``runner`` imports Ray (the ``sweep`` extra).
"""
