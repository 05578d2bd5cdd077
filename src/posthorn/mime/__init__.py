"""Pure bytes-in/bytes-out message building: no I/O, nothing from outside ``posthorn.domain``."""

from posthorn.mime.compose import Attachment, MessageSpec, compose

__all__ = ["Attachment", "MessageSpec", "compose"]
