"""Exceptions that mean "the user gave us something we cannot use".

The CLI turns these into a one-line message and a non-zero exit code; the widget turns them
into a napari notification. Anything else is a bug and keeps its traceback.
"""


class NapariUnetError(Exception):
    """Base class for errors whose message is meant for the user."""


class InputError(NapariUnetError, ValueError):
    """Images, labels or settings that cannot be used as given."""


class CheckpointError(NapariUnetError):
    """A model file that is missing, corrupt, unsafe or incompatible."""
