"""The project's exception hierarchy.

Every error a user can cause (bad params, bad input files, an unloadable encoder, a
diverging run) is one of these. Stage entry points turn them into one line on stderr and
a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class M3SAError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(M3SAError):
    """params.yaml or a ``--set`` override is invalid (unknown key, wrong type, bad value)."""


class DataError(M3SAError):
    """An input data file is missing, unreadable or inconsistent."""


class CSDError(DataError):
    """A CMU-MultimodalSDK computational sequence (.csd) file is malformed."""


class PickleFileError(DataError):
    """A pickle input (MMSA, MAG-BERT layout) is unreadable, not of its layout, or names
    something the allowlist loader does not build."""


class ModelError(M3SAError):
    """A model cannot be built or loaded (encoder path, widths that disagree...)."""


class CheckpointError(ModelError):
    """A checkpoint is missing, corrupt, or not one written by this project."""


class TrainingError(M3SAError):
    """Training cannot go on (e.g. a non-finite loss)."""


class OutputError(M3SAError):
    """An output cannot be written (read-only directory, disk full...)."""
