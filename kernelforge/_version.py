"""The package version, read by the build backend and written into tuning records."""

__version__ = "0.1.0"
