"""Named errors shared across skysift. Each failure a user can act on has its own class."""


class SkysiftError(Exception):
    """Base class for every error skysift raises on purpose."""


class ConfigError(SkysiftError):
    """The YAML configuration is invalid. The message names the dotted key path."""


class ImageError(SkysiftError):
    """A file cannot be classified: corrupt, truncated, empty, not an image, too large.

    `reason` is a short machine-friendly code (e.g. ``corrupt``, ``too_large``); the message
    is the human explanation stored next to the rejected frame.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ModelError(SkysiftError):
    """The model files are missing, malformed, or do not match their model card."""


class ModelIntegrityError(ModelError):
    """A model file's sha256 does not match the hash recorded in its model card."""


class EngineUnavailable(SkysiftError):
    """An inference engine cannot run here (library missing, no usable device)."""


class InferenceError(SkysiftError):
    """Inference failed at run time on an engine that had compiled successfully."""


class StorageFull(SkysiftError):
    """The disk or the configured storage budget has no room for more frames."""


class MissingExtra(SkysiftError):
    """A configured feature needs an optional extra (``skysift[cloud]``...) that is not installed."""
