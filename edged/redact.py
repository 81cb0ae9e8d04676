"""Passwords out of text: the one function every printed URL, error and log line goes through.

A camera password may hold any character (``/``, ``#``, ``?``, ``@``, ``:``, spaces,
unicode), and operators write it unencoded. RFC 3986 (section 3.2) ends the authority at
the first ``/``, ``?`` or ``#``, so a parser that follows the RFC splits such a password
and reads its head as the host or port; a pattern that stops at those characters leaks its
tail. :func:`redact` therefore does not parse: the user information is everything from
``scheme://`` to the LAST ``@`` after it (a password never has to be guessed at, at
worst a path's ``@`` hides a little more than needed), and a password is everything in it
after the first ``:`` (without a ``:`` all of it is masked). The same holds for the
mistyped forms a config may hold (``rtsp//user:pw@host``, ``rtsp:/user:pw@host``,
``user:pw@host/x``), for a URL whose ``#`` cut it short (``rtsp://user:pw`` leaves a
"port" that is no number: masked too), for GStreamer properties (``user-pw=``) and for
secret-looking query parameters.
"""

import re
from typing import Any, List, Optional, Tuple

MASK = "***"

# Every pattern that starts with a run of characters may only start where such a run starts
# (the look-behinds): a long run is then scanned once, not once per character (quadratic).
# "scheme://": the user information starts after it.
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
# A network scheme with a mistyped "://" ("rtsp//", "rtsp:/", "rtsp:"), at a word start.
_MISTYPED = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?:rtsps?|rtmps?|rtp|https?|udp|srt)(?::/?|//)(?!/)", re.I
)
# No scheme at all: "user:" ("user:pw@host/x"; the password may start with a space).
_BARE = re.compile(r"(?<![^\s/@:'\"=])[^\s/@:'\"=]+:")
_BARE_AT_START = re.compile(r"^[^\s/@:'\"=]*:")
# After "scheme://" with no "@" behind it: "host:" and a port that must be digits.
_PORT = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://"
    r"(?:\[[^\]\s/]*\]|[^\s/?#@:\[\]]*)):(?P<port>[^/]*)"
)
_GOOD_PORT = re.compile(r"(\d+(\s|$)|$)")  # a number, then the end or more words of a message
# GStreamer element properties (rtspsrc user-pw=...); not URL query parameters, handled below.
_SECRET_PROPERTY = re.compile(
    r"(?P<head>(?<![?&])\b(user-pw|password|passwd|pass|pwd)\s*=\s*)(?P<v>\"[^\"]*\"|'[^']*'|[^\s!]+)",
    re.I,
)
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&](pass(word|wd)?|pwd|token|secret|key|auth|api_?key)=)(?P<v>[^&#\s]*)", re.I
)


def redact(text: str) -> str:
    """``text`` with passwords masked: ``rtsp://user:***@host``, ``password=***``.

    Works on a bare source string and on any text that embeds one (a GStreamer
    pipeline, an error message): every URL, log line and error that may hold a
    camera URL passes through it.
    """
    text = _mask_user_info(str(text))
    text = _mask_ports(text)
    text = _SECRET_PROPERTY.sub(lambda m: m.group("head") + MASK, text)
    return _SECRET_QUERY.sub(lambda m: m.group("head") + MASK, text)


def _next_start(text: str, pos: int) -> Optional[int]:
    """Where the user information of the first URL-ish thing at or after ``pos`` starts;
    a scheme wins over a bare "user:" that begins at the same place."""
    found: List[Tuple[int, int, int]] = []
    for rank, pattern in enumerate((_SCHEME, _MISTYPED)):
        m = pattern.search(text, pos)
        if m:
            found.append((m.start(), rank, m.end()))
    m = _BARE_AT_START.match(text) if pos == 0 else None
    m = m or _BARE.search(text, pos)
    if m:
        found.append((m.start(), 2, m.start()))
    return min(found)[2] if found else None


def _mask_user_info(text: str) -> str:
    out: List[str] = []
    pos = 0
    while True:
        found = _next_start(text, pos)
        if found is None:
            break
        start = found
        at = text.rfind("@", start)
        if at < 0:  # nothing behind can hold a password either
            break
        user_info = text[start:at]
        colon = user_info.find(":")
        if colon < 0:
            # no ":": a token used as the user name (https://TOKEN@host), or a password that
            # made "user:" look like a scheme ("user://pw@host"): masked whole, as pip's
            # redact_netloc (src/pip/_internal/utils/misc.py) does
            out.append(text[pos:start] + MASK + "@")
        else:
            out.append(text[pos : start + colon] + ":" + MASK + "@")
        pos = at + 1
    out.append(text[pos:])
    return "".join(out)


def _mask_ports(text: str) -> str:
    def port(m: Any) -> str:
        value = m.group("port")
        if _GOOD_PORT.match(value) or value.startswith(MASK + "@"):
            return m.group(0)
        return m.group("head") + ":" + MASK

    return _PORT.sub(port, text)
