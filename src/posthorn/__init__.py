"""Posthorn: self-hosted transactional email."""

__version__ = "0.1.0"
