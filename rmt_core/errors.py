"""Error types of RMT Lens. Each carries a one-line message that names the problem and the fix."""


class RMTError(Exception):
    """Base of every error the command line turns into a one-line message (exit code 1)."""

    def __init__(self, message: str):
        # One line, always: callers may build messages from file contents.
        super().__init__(" ".join(str(message).split()))


class CheckpointError(RMTError):
    """A checkpoint folder is missing, broken or of an unknown format."""


class TaskError(RMTError):
    """A task, its arguments or its data files (bAbI, noise) are unusable."""


class TraceError(RMTError):
    """A trace folder is missing, broken, or cannot be written."""


class ReplayError(RMTError):
    """An input cannot be replayed (empty text, question too long, ...)."""


class ProbeError(RMTError):
    """A probe run cannot be carried out with the given arguments."""


class TrainError(RMTError):
    """A training run cannot start or resume with the given arguments."""
