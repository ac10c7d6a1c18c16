"""The error every config check raises (its own module so that every config module shares it)."""


class ConfigError(ValueError):
    """A config that cannot be run: the message names the key and what is wrong with it."""
