"""Email addresses: parsing "Name <local@domain>" and formatting them back, with no I/O.

Parsing is strict but practical, close to what the big transactional APIs accept: one mailbox
per string, a dot-atom local part (RFC 5322 §3.4.1, widened to UTF-8 by RFC 6532 §3.2), and a
host name domain with at least one dot, stored as its IDNA A-label. Quoted local parts,
IP-literals, groups and comments are refused: they are legal but almost always a mistake in a
transactional API, and some receivers reject them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from posthorn.domain.encoded_words import decode_words, encode_words


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox. ``email`` is ``local@domain`` with the domain lower-cased."""

    email: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    @property
    def local_part(self) -> str:
        return self.email.rpartition("@")[0]


class AddressError(ValueError):
    """The text is not one valid mailbox."""


# RFC 5321 §4.5.3.1.1: local part at most 64 octets.
MAX_LOCAL_OCTETS = 64
# RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets.
MAX_ADDRESS_OCTETS = 254
# RFC 1035 §2.3.4: labels at most 63 octets, names at most 255 on the wire (253 as text).
MAX_LABEL_OCTETS = 63
MAX_DOMAIN_OCTETS = 253

# RFC 5322 §3.2.3 atext; RFC 6532 §3.2 adds any non-ASCII character.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_LOCAL_ATOM = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_ATOM_PHRASE = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHITE_SPACE = re.compile(r"\s")  # str.isspace's characters
# Characters that make an unquoted display name ambiguous: a second address, a group (":"),
# or a stray quote. "." and "@" are tolerated because mail clients emit them unquoted.
_NAME_BREAKERS = re.compile(r'[<>",;:]')

# RFC 2047 §2 allows 75, but a display name's first word shares its line with "Reply-To: ",
# so 68 keeps that line within the 78 characters of RFC 5322 §2.1.1.
_NAME_WORD_LIMIT = 68
# A quoted name word longer than this could not be folded onto a 78-character line, so such
# names are sent as encoded words, which split anywhere.
_LONGEST_PLAIN_WORD = 60


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address:
    """Parse one mailbox: ``a@b.com``, ``Name <a@b.com>`` or ``"Doe, John" <a@b.com>``.

    Cached (the result is immutable): an application sends from a few addresses, often to
    the same people, and every email is checked on the way in.
    """
    if "\r" in text or "\n" in text or "\x00" in text:
        raise AddressError("contains a line break or NUL")
    text = text.strip()
    if not text:
        raise AddressError("empty address")
    if text.endswith(">"):
        name, spec = _split_name_addr(text)
    else:
        name, spec = "", text
        if "," in spec or ";" in spec:
            raise AddressError("more than one address")
        if "<" in spec or ">" in spec:
            raise AddressError("unbalanced angle brackets")
    return Address(email=_parse_addr_spec(spec), name=name)


def parse_address_list(items: Iterable[str]) -> tuple[Address, ...]:
    """Parse each item as one mailbox (a list is never split on commas)."""
    return tuple(parse_address(item) for item in items)


def format_address(address: Address) -> str:
    """The header form of one mailbox (RFC 5322 §3.4), encoding the name when needed."""
    name = address.name
    if not name:
        return address.email
    if (
        name.isascii()
        and "=?" not in name
        and not _CONTROL.search(name)
        and (len(name) <= _LONGEST_PLAIN_WORD or _longest_word(name) <= _LONGEST_PLAIN_WORD)
    ):
        if _ATOM_PHRASE.fullmatch(name):
            return f"{name} <{address.email}>"
        # RFC 5322 §3.2.4: inside a quoted-string only "\" and DQUOTE need a backslash.
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address.email}>'
    # RFC 2047 §5 (3): encoded words may stand in for a phrase; "=?" is encoded too so that a
    # literal "=?...?=" in a name is not decoded by the reader.
    words = encode_words(name, first_limit=_NAME_WORD_LIMIT, limit=_NAME_WORD_LIMIT)
    return f"{' '.join(words)} <{address.email}>"


def _longest_word(text: str) -> int:
    return max(len(word) for word in text.split(" "))


def _split_name_addr(text: str) -> tuple[str, str]:
    """Split ``display-name <addr-spec>`` (RFC 5322 §3.4 name-addr); ``text`` ends with ">"."""
    if text.startswith('"'):
        name, end = _read_quoted(text)
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise AddressError("expected <address> after the quoted name")
        inner = rest[1:-1]
    else:
        opening = text.rfind("<")
        if opening == -1:
            raise AddressError("unbalanced angle brackets")
        raw_name = text[:opening]
        breaker = _NAME_BREAKERS.search(raw_name)
        if breaker is not None:
            if breaker.group() in ",;<>":
                raise AddressError("more than one address (quote a name that has a comma)")
            if breaker.group() == ":":
                raise AddressError("group syntax is not supported")
            raise AddressError("misplaced quote in the display name")
        # RFC 5322 §3.2.2: runs of white space in a phrase are equivalent to one space.
        name = decode_words(" ".join(raw_name.split()))
        inner = text[opening + 1 : -1]
    if "<" in inner or ">" in inner:
        raise AddressError("more than one address")
    name = name.replace("\t", " ")
    if _CONTROL.search(name):
        raise AddressError("control character in the display name")
    return name, inner.strip()


def _read_quoted(text: str) -> tuple[str, int]:
    """Read the quoted-string at the start of ``text``; return its content and end index."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(chars), index + 1
        if char == "\\":
            index += 1
            if index == len(text):
                break
            char = text[index]
        chars.append(char)
        index += 1
    raise AddressError("unterminated quoted name")


def _parse_addr_spec(spec: str) -> str:
    """Validate ``local@domain`` and return it with the domain as a lower-case A-label."""
    if _WHITE_SPACE.search(spec):
        raise AddressError("address contains white space")
    at_count = spec.count("@")
    if at_count == 0:
        raise AddressError("missing @")
    if at_count > 1:
        raise AddressError("more than one @ (quoted local parts are not supported)")
    local, _, domain = spec.partition("@")
    _check_local(local)
    domain = _to_a_label(domain)
    if len(local.encode("utf-8")) + 1 + len(domain) > MAX_ADDRESS_OCTETS:
        raise AddressError(f"address longer than {MAX_ADDRESS_OCTETS} octets")
    return f"{local}@{domain}"


def _check_local(local: str) -> None:
    if not local:
        raise AddressError("missing local part")
    if local.startswith('"'):
        raise AddressError("quoted local parts are not supported")
    _check_dots(local, "local part")
    # RFC 5322 §3.4.1 dot-atom: atoms of atext separated by single dots.
    for atom in local.split("."):
        if not _LOCAL_ATOM.fullmatch(atom) or not atom.isprintable():
            raise AddressError("invalid character in the local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        raise AddressError(f"local part longer than {MAX_LOCAL_OCTETS} octets")


def _check_dots(text: str, what: str) -> None:
    if text.startswith(".") or text.endswith("."):
        raise AddressError(f"{what} starts or ends with a dot")
    if ".." in text:
        raise AddressError(f"{what} has consecutive dots")


def _to_a_label(domain: str) -> str:
    if not domain:
        raise AddressError("missing domain")
    if domain.startswith("["):
        raise AddressError("IP-literal domains are not accepted")
    domain = domain.lower()
    _check_dots(domain, "domain")
    if not domain.isascii():
        try:
            # IDNA 2003 ToASCII (RFC 3490 §4): nameprep, then punycode per label.
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise AddressError("invalid internationalised domain") from exc
        # Ideographic full stops (U+3002 and kin) become "." only now.
        _check_dots(domain, "domain")
    labels = domain.split(".")
    if len(labels) < 2:
        raise AddressError("domain has no dot")
    for label in labels:
        if len(label) > MAX_LABEL_OCTETS:
            raise AddressError(f"domain label longer than {MAX_LABEL_OCTETS} octets")
        # RFC 1035 §2.3.1 / RFC 5890 §2.3.1: letters, digits and inner hyphens.
        if not _LDH_LABEL.fullmatch(label):
            raise AddressError("invalid character in the domain")
    if labels[-1].isdigit():
        # RFC 3696 §2: a top-level domain is never all-numeric, so this is a bare IP address.
        raise AddressError("IP addresses are not accepted as domains")
    if len(domain) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"domain longer than {MAX_DOMAIN_OCTETS} octets")
    return domain
