"""Typed exceptions raised by the public API; the CLI turns each into one line and exit status 2."""


class HymbaError(Exception):
    """Base class of every error this package raises on bad input."""


class ConfigError(HymbaError):
    """A config.json that is missing, malformed, not Hymba, or internally inconsistent."""


class WeightsError(HymbaError):
    """Missing, unexpected or mis-shaped tensors in a checkpoint, or an unreadable checkpoint."""


class ModelNotFoundError(HymbaError):
    """A --model that is neither an existing checkpoint folder nor a known preset."""


class TokenizerError(HymbaError):
    """A tokenizer that cannot be read, or text that cannot be tokenized."""


class InputError(HymbaError):
    """Bad generation input: empty or over-long prompt, bad ids, invalid sampling values."""
