"""Resolving webhook hosts: the resolver lives in ``delivery/hosts.py``, shared with the
relays' check."""

from __future__ import annotations

from posthorn.delivery.hosts import DnsHostResolver

__all__ = ["DnsHostResolver"]
