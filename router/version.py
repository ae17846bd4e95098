"""The installed package's version: `router --version` and the HTTP API's OpenAPI document print it."""
from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("ensemble-router")
    except PackageNotFoundError:  # a source tree that was never installed (`make` always installs it)
        return "unknown"
