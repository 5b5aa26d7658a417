"""Text read from the host, as it may reach an operator's terminal.

`status` and `verify` run as root and print what the Hermes user can write (board names, URLs in
its config.yaml, log lines): an escape sequence there must show as text, never act on the terminal.
"""

from __future__ import annotations

import unicodedata


def clean(text: object, width: int | None = None) -> str:
    """`text` as it may reach a terminal: control, format and separator characters (an escape
    sequence, a carriage return, a right-to-left override) escaped as \\xNN or \\uNNNN; cut to
    `width` characters with an ellipsis."""
    out = []
    for char in str(text):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    shown = "".join(out)
    return shown if width is None or len(shown) <= width else shown[: width - 1] + "…"
