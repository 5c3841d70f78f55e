"""faas: a self-hosted function platform, wire-compatible with the AWS Lambda API."""

__version__ = "0.1.0"
