"""Exception hierarchy shared by the whole package.

Every error a user can cause (bad file, bad molecule, bad protocol message) derives from
:class:`SecureMLError`, so the CLI can print one clear line instead of a traceback.
"""


class SecureMLError(Exception):
    """Base class of all user-facing secureml errors."""


class DataError(SecureMLError, ValueError):
    """A data file or molecule is malformed; the message names the file and line where possible."""


class ModelError(SecureMLError, ValueError):
    """A model file is malformed, or a model is used with incompatible inputs."""


class ProtocolError(SecureMLError):
    """A two-party protocol failed: malformed or oversized message, wrong version, peer gone."""
