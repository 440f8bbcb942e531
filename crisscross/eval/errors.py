"""The one error type of evaluation that a user can cause and fix (the CLI prints its message)."""


class EvalError(ValueError):
    """An evaluation input the user must fix (no clips of a split, a missing checkpoint, ...)."""
