"""Errors a user can act on.

Stages raise these with a one-line message that names the file or setting at
fault; the CLI prints the message alone (no traceback unless ``--debug``).
Anything else that escapes a stage is a bug.
"""


class UserError(Exception):
    """Base class: the message is complete and meant for the user."""


class ConfigError(UserError):
    """A setting is unknown, out of range, or inconsistent with another."""


class InputError(UserError):
    """An input video, frame folder or labels file cannot be used."""


class ArtifactError(UserError):
    """A file in the work folder is missing, foreign, truncated or stale."""
