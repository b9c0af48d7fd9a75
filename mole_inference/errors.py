"""Typed errors for what users can fix: bad config, bad checkpoint, missing backend, bad input."""


class MoleError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(MoleError, ValueError):
    """A configuration field has a wrong type or value; the message names field and value."""


class CheckpointError(MoleError):
    """A checkpoint directory is missing files or does not match its config."""


class BackendUnavailableError(MoleError, RuntimeError):
    """An optional backend (CUDA, onnxruntime, TensorRT, MuJoCo) is not installed or not usable here."""


class InputError(MoleError, ValueError):
    """An input (image, instruction, message) cannot be used; the caller should hold and report."""


class WorkerError(MoleError, RuntimeError):
    """The inference worker process crashed, hung past its deadline, is restarting or was closed; the message says
    which. The caller should hold and try again with a later frame."""
