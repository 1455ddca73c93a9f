"""Text from a capture made safe for a terminal: control characters shown, never obeyed.

A capture is data from elsewhere: task and device names, kernel log lines, meta values and
file names can hold ESC, BEL, CR, NUL or C1 bytes that would retitle, clear or rewrite a
terminal. Everything snapprof prints for a terminal (text reports, ``compare``'s text,
errors and warnings) goes through ``visible`` (one field, one line) or ``visible_text``
(a whole output that keeps its own newlines). HTML and JSON keep the exact text, escaped
for their format (Jinja2 autoescaping, ``json.dumps``; see ``json_text``).

Shown as Python-style escapes: C0 controls and DEL as ``\\x1b``, C1 controls as
``\\x9b``, and the Unicode format characters that reorder or break lines (bidi embeddings,
overrides and isolates, line and paragraph separators) as ``\\u202e``.

Standard library only.
"""

from __future__ import annotations

import re

# C0 (without TAB/LF, handled per function), DEL, C1, bidi controls, LS/PS, and the
# zero-width/BOM characters that hide text.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff"
_FIELD = re.compile(f"[\t\n{_UNSAFE}]")
_TEXT = re.compile(f"[{_UNSAFE}]")
_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match) -> str:
    c = ord(match.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def visible(value) -> str:
    """One line of text: every control character (newline and tab too) as an escape."""
    return _FIELD.sub(_escape, str(value))


def visible_text(text: str) -> str:
    """A whole output: its newlines and tabs kept, every other control as an escape."""
    return _TEXT.sub(_escape, text)


def json_text(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``, which escapes C0 already)
    with DEL, C1 and the invisible format characters as ``\\u`` escapes too: the same
    string to a JSON parser, nothing a terminal acts on when it is printed. These
    characters only occur inside JSON strings, so the escape is always valid there."""
    return _JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
