"""What a Hermes config.yaml says under `kanban:`, with the types Hermes' YAML loader gives them.

Hermes reads its config with PyYAML (YAML 1.1) and tests `kanban.dispatch_in_gateway` by Python
truth, so `false`, `off` and `no` turn the gateway dispatcher off while the quoted string "false"
turns it on. Telling them apart needs the scalar's YAML type, not its text. The pass must not
depend on a YAML library, so this reads, with the standard library only, the scalars one level
under the top-level `kanban:` mapping (block or single-line flow style) and resolves them as
PyYAML's SafeLoader does. What it cannot read as plainly as that is returned as UNREADABLE, never
guessed. The file is read through safefile: bounded, never a FIFO, never through a link the Hermes
user made; a byte that is not UTF-8 is replaced, and noted, since Hermes then cannot load the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import safefile

UNREADABLE = object()  # a value this reader does not resolve (a tag, an alias, a block scalar...)
NATIVE_CAPS = ("max_in_progress", "max_spawn")

# PyYAML's implicit resolvers (yaml/resolver.py, YAML 1.1).
_BOOL = {
    **dict.fromkeys(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
}
_NULL = {"", "~", "null", "Null", "NULL"}
_INT = re.compile(
    r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+"
)
_FLOAT = re.compile(
    r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_KEY = re.compile(r"""^(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)'|([^\s#'"{\[][^:#]*?))\s*:(?:\s+|$)(.*)$""")


@dataclass
class KanbanConfig:
    """The `kanban:` scalars of one config.yaml, and whether Hermes can load the file at all."""

    path: Path
    values: dict[str, object] = field(default_factory=dict)
    found: bool = False  # the file exists and was read
    utf8: bool = True  # False: Hermes' loader fails on it and falls back to its defaults
    error: str = ""  # why the file was not read (a link, a FIFO, too large), naming the path


def _plain(text: str) -> object:
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        return _int(text)
    if _FLOAT.fullmatch(text):
        return _float(text)
    return text


def _int(text: str) -> int:
    digits = text.replace("_", "")
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    if digits.startswith(("0b", "0x")):
        return sign * int(digits, 0)
    if ":" in digits:
        value = 0
        for part in digits.split(":"):
            value = value * 60 + int(part)
        return sign * value
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits, 8)
    return sign * int(digits)


def _float(text: str) -> float:
    digits = text.replace("_", "").lower()
    if digits.endswith("nan"):
        return float("nan")
    if digits.endswith("inf"):
        return float(digits.replace(".inf", "inf"))
    if ":" in digits:
        sign = -1.0 if digits.startswith("-") else 1.0
        value = 0.0
        for part in digits.lstrip("+-").split(":"):
            value = value * 60 + float(part)
        return sign * value
    return float(digits)


def _double_quoted(body: str) -> str:
    simple = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "0": "\0", " ": " ", "/": "/", "r": "\r"}
    out, index = [], 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            nxt = body[index + 1]
            if nxt in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[nxt]
                out.append(chr(int(body[index + 2 : index + 2 + width], 16)))
                index += 2 + width
                continue
            out.append(simple.get(nxt, nxt))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def scalar(text: str) -> object:
    """One YAML scalar (comment and surrounding space allowed) as PyYAML's SafeLoader types it."""
    text = text.strip()
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"\s*(?:#.*)?$', text)
        return _double_quoted(match.group(1)) if match else UNREADABLE
    if text.startswith("'"):
        match = re.match(r"'((?:[^']|'')*)'\s*(?:#.*)?$", text)
        return match.group(1).replace("''", "'") if match else UNREADABLE
    text = re.split(r"\s#", text, maxsplit=1)[0].rstrip()
    if text.startswith("#"):
        return None
    if text in ("[]", "{}"):
        return [] if text == "[]" else {}  # empty: false to Python, as Hermes tests it
    if text[:1] in ("!", "&", "*", "|", ">", "[", "{", "@", "`", "%"):
        return UNREADABLE  # a tag, an anchor or alias, a block scalar, a collection
    return _plain(text)


def _key(match: re.Match) -> str:
    double, single, plain = match.group(1), match.group(2), match.group(3)
    if double is not None:
        return _double_quoted(double)
    if single is not None:
        return single.replace("''", "'")
    return plain.strip()


def _flow_mapping(text: str) -> dict[str, object] | None:
    """A single-line flow mapping of scalars (`{a: 1, b: "x"}`); None when it is anything else."""
    text = re.split(r"\s#", text.strip(), maxsplit=1)[0].rstrip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    body = text[1:-1].strip()
    if not body:
        return {}
    found: dict[str, object] = {}
    for item in re.findall(r"""(?:"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^,"'])+""", body):
        match = _KEY.match(item.strip())
        if not match:
            return None
        value = match.group(4).strip()
        found[_key(match)] = scalar(value) if value else None
    return found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse_kanban(text: str) -> dict[str, object]:
    """The scalars directly under the top-level `kanban:` key. A later `kanban:` replaces an
    earlier one and a later key an earlier one, as PyYAML builds the mapping."""
    values: dict[str, object] = {}
    lines = text.removeprefix("\ufeff").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        top = _KEY.match(line) if line[:1] not in ("", " ", "\t", "#") else None
        if not top or _key(top) != "kanban":
            continue
        rest = top.group(4)
        flow = _flow_mapping(rest)
        if flow is not None:
            values = flow
            continue
        values = {}
        if re.split(r"\s#|^#", rest.strip(), maxsplit=1)[0].strip():
            values = {"": UNREADABLE}  # `kanban:` holds a scalar or something not read here
            continue
        index = _read_block(lines, index, values)
    return values


def _read_block(lines: list[str], index: int, values: dict[str, object]) -> int:
    """Read the block mapping under `kanban:` from lines[index:]; return where it ends."""
    width = None
    last_key = None
    while index < len(lines):
        line = lines[index]
        if not line.strip() or line.lstrip().startswith("#"):
            index += 1
            continue
        indent = _indent(line)
        if indent == 0:
            return index
        width = indent if width is None else width
        index += 1
        if indent > width:
            # A continuation line: a plain scalar folded over lines, or a nested collection.
            if last_key is not None:
                values[last_key] = UNREADABLE
            continue
        match = _KEY.match(line.strip())
        if indent < width or not match:
            values[line.strip()] = UNREADABLE
            last_key = None
            continue
        last_key = _key(match)
        values[last_key] = scalar(match.group(4)) if match.group(4).strip() else None
    return index


def read(path: Path) -> KanbanConfig:
    """Read config.yaml at `path` safely; a missing file is `found=False` with no error."""
    result = KanbanConfig(path)
    try:
        data = safefile.read_bytes(path)
    except FileNotFoundError:
        return result
    except OSError as exc:
        message = exc.strerror or str(exc)
        result.error = message if str(path) in message else f"{path}: {message}"
        return result
    result.found = True
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        result.utf8 = False
        text = data.decode("utf-8", "replace")
    result.values = parse_kanban(text)
    return result


def show(value: object) -> str:
    """A value as the config spells it, for messages: quoted strings stay quoted."""
    if value is UNREADABLE:
        return "a value this check cannot read"
    if isinstance(value, str):
        return repr(value).replace("'", '"') if value.isprintable() else repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


ENV_OFF = {"0", "false", "no", "off"}


def gateway_dispatch(config: KanbanConfig, env_override: str | None) -> tuple[bool, str]:
    """Whether a gateway reading `config` runs the embedded dispatcher, and why.

    Hermes' rule (gateway/run.py in 0.14, gateway/kanban_watchers.py in 0.19): the environment
    variable HERMES_KANBAN_DISPATCH_IN_GATEWAY, stripped and lowercased, turns it off when it is
    0/false/no/off and does nothing otherwise; then `if not kanban.get("dispatch_in_gateway",
    True)` turns it off, so any value Python finds false (false/no/off, 0, null, "") is off and
    anything else (the string "false" included) is on. A config Hermes cannot load leaves its
    defaults: on.
    """
    if env_override is not None and env_override.strip().lower() in ENV_OFF:
        return False, f"HERMES_KANBAN_DISPATCH_IN_GATEWAY={env_override}"
    where = f"{config.path}: kanban.dispatch_in_gateway"
    if config.error:
        return True, f"{config.error} (Hermes' default: on)"
    if not config.found:
        return True, f"{config.path} missing, so kanban.dispatch_in_gateway is unset (Hermes' default: on)"
    if not config.utf8:
        return True, f"{config.path} is not UTF-8: Hermes cannot load it and uses its defaults (on)"
    if "dispatch_in_gateway" not in config.values:
        return True, f"{where} unset (Hermes' default: on)"
    value = config.values["dispatch_in_gateway"]
    if value is UNREADABLE:
        return True, f"{where}: not a plain scalar, taken as on"
    if isinstance(value, str) and value:
        return True, f"{where}: {show(value)} (a quoted string: Hermes reads any non-empty string as on)"
    return bool(value), f"{where}: {show(value)}"


def kanban_settings(config: Path) -> dict[str, object]:
    """The scalars under `kanban:` of a config (nothing when it cannot be read safely)."""
    return read(config).values


def native_caps(config: Path) -> dict[str, str]:
    """kanban.max_in_progress / kanban.max_spawn set (not null) in a Hermes config.yaml.

    Hermes clamps `dispatch --max` by these and counts running cards twice (upstream #33326), so
    the pass reports them.
    """
    values = kanban_settings(config)
    return {
        key: show(values[key]).strip('"')
        for key in NATIVE_CAPS
        if key in values and values[key] is not None and values[key] != ""
    }


def config_path(env: dict[str, str]) -> Path:
    """The config the dispatch CLI reads: HERMES_HOME's, or the root home's."""
    home = env.get("HERMES_HOME", "").strip()
    base = Path(home) if home else Path(env.get("HOME") or os.path.expanduser("~")) / ".hermes"
    return base / "config.yaml"


def model_base_url(path: Path) -> str | None:
    """model.base_url of a Hermes config.yaml: the endpoint that home's workers call. None when the
    file is missing or refused, `model:` is a bare model name, or the key is unset or not a string
    this reader resolves. Read as `kanban:` is: safefile, the last top-level `model:` wins."""
    try:
        text = safefile.read_bytes(path).decode("utf-8", "replace")
    except OSError:
        return None
    values: dict[str, object] = {}
    lines = text.removeprefix("\ufeff").splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        top = _KEY.match(line) if line[:1] not in ("", " ", "\t", "#") else None
        if not top or _key(top) != "model":
            continue
        flow = _flow_mapping(top.group(4))
        values = flow if flow is not None else {}
        if flow is None and not re.split(r"\s#|^#", top.group(4).strip(), maxsplit=1)[0].strip():
            index = _read_block(lines, index, values)
    url = values.get("base_url")
    return url.strip() if isinstance(url, str) and url.strip() else None
