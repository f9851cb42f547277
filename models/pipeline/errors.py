"""Errors the pipeline reports to the user: one clear line naming what to fix."""


class PipelineError(RuntimeError):
    """A failure with a message meant for the user (no traceback needed)."""


class OutOfTime(PipelineError):
    """The time budget ran out inside a stage; the last finished stage is checkpointed."""
