#!/usr/bin/python
"""Ansible module: set and unset scalar keys of one top-level mapping of a YAML file, keeping
every other line, comment and key as it was.

`hermes config set` rewrites config.yaml and drops every comment, so the roles edit it here:
line by line, then prove the edit by parsing both versions and comparing them with what was asked.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: hermes_yaml_section
short_description: Edit scalar keys of one top-level mapping of a YAML file, keeping comments
description:
  - Sets and unsets scalar keys of one top-level block mapping (for example C(kanban)) of a YAML
    file. Every other line, comment and key is kept byte for byte.
  - The result is parsed and compared with the intended data before anything is written; a file
    that is not valid YAML fails the task and is left untouched.
  - The file is backed up and replaced atomically. Check mode and diff mode are supported.
options:
  path: {description: The YAML file., type: path, required: true}
  section: {description: Top-level key of the mapping to edit., type: str, required: true}
  set: {description: Scalar keys to set in the mapping., type: dict, default: {}}
  unset: {description: Keys to remove from the mapping., type: list, elements: str, default: []}
  known: {description: "Keys the installed Hermes reads in this mapping; others are warned about. Empty: no check.", type: list, elements: str, default: []}
  unset_unknown: {description: Remove the keys that are not in C(known)., type: bool, default: false}
  create: {description: Create the file when it is missing., type: bool, default: false}
  backup: {description: Keep a timestamped copy of the file before changing it., type: bool, default: true}
extends_documentation_fragment: [files]
"""

RETURN = r"""
removed: {description: Keys removed, with the values they had., type: dict, returned: always}
unknown: {description: Keys of the mapping the installed Hermes ignores., type: list, returned: always}
keys: {description: Keys of the mapping after the edit., type: list, returned: always}
backup_file: {description: Path of the backup., type: str, returned: changed and backup}
"""

import json
import os
import re
import tempfile

try:
    import yaml

    HAS_YAML = True
except ImportError:  # reported by the module with the package to install
    HAS_YAML = False

from ansible.module_utils.basic import AnsibleModule


class EditError(ValueError):
    pass


def _render(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./:@-]+", text) and yaml.safe_load(text) == text and ": " not in text:
        return text
    return json.dumps(text)


def _key_line(indent, key):
    return re.compile(
        r"^" + re.escape(indent) + re.escape(key) + r"\s*:(?P<value>[^#]*?)(?P<comment>\s*#.*)?$"
    )


def _block_end(lines, start, indent_len):
    """Index after the lines nested under lines[start] (deeper than indent_len)."""
    end = start + 1
    while end < len(lines):
        line = lines[end]
        content = line.strip() and not line.lstrip().startswith("#")
        if content and len(line) - len(line.lstrip()) <= indent_len:
            break
        end += 1
    # Trailing blank or comment lines belong to whatever follows.
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return end


def edit(text, section, to_set, to_unset):
    """Return (new_text, removed). Raise EditError when the file cannot be edited safely."""
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise EditError(f"not valid YAML: {exc}".replace("\n", " ")) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EditError("the top level is not a mapping")
    current = data.get(section)
    if current is not None and not isinstance(current, dict):
        raise EditError(f"'{section}' is not a mapping")
    current = dict(current or {})
    removed = {key: current[key] for key in to_unset if key in current}
    for key in to_set:
        if isinstance(current.get(key), (dict, list)):
            raise EditError(f"'{section}.{key}' is not a scalar")

    lines = text.splitlines()
    head = next(
        (i for i, line in enumerate(lines) if re.match(r"^" + re.escape(section) + r"\s*:", line)), None
    )
    if head is not None and not re.match(r"^" + re.escape(section) + r"\s*:\s*(#.*)?$", lines[head]):
        raise EditError(f"'{section}' is not written as a block mapping; edit it by hand")

    if head is None:
        if to_set:
            lines += [f"{section}:"] + [f"  {key}: {_render(value)}" for key, value in to_set.items()]
    else:
        end = _block_end(lines, head, 0)
        body = [line for line in lines[head + 1 : end] if line.strip() and not line.lstrip().startswith("#")]
        indent = re.match(r"^\s*", body[0]).group(0) if body else "  "
        for key in to_unset:
            pattern = _key_line(indent, key)
            for i in range(head + 1, end):
                if pattern.match(lines[i]):
                    stop = _block_end(lines, i, len(indent))
                    del lines[i:stop]
                    end -= stop - i
                    break
        for key, value in to_set.items():
            pattern = _key_line(indent, key)
            for i in range(head + 1, end):
                match = pattern.match(lines[i])
                if match:
                    if match.group("value").strip() and yaml.safe_load(match.group("value")) == value:
                        break
                    lines[i] = f"{indent}{key}: {_render(value)}{match.group('comment') or ''}"
                    break
            else:
                lines.insert(end, f"{indent}{key}: {_render(value)}")
                end += 1

    new_text = "\n".join(lines) + ("\n" if lines else "")
    expected = dict(data)
    wanted = {k: v for k, v in current.items() if k not in to_unset}
    wanted.update(to_set)
    if wanted or section in data:
        expected[section] = wanted or None
    try:
        result = yaml.safe_load(new_text) or {}
    except yaml.YAMLError as exc:
        raise EditError(f"the edit would not be valid YAML ({exc}); nothing was written") from exc
    if result != expected:
        raise EditError("the edit would change more than asked; nothing was written")
    if text.strip() == new_text.strip():
        new_text = text
    return new_text, removed


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "section": {"type": "str", "required": True},
            "set": {"type": "dict", "default": {}},
            "unset": {"type": "list", "elements": "str", "default": []},
            "known": {"type": "list", "elements": "str", "default": []},
            "unset_unknown": {"type": "bool", "default": False},
            "create": {"type": "bool", "default": False},
            "backup": {"type": "bool", "default": True},
        },
        add_file_common_args=True,
        supports_check_mode=True,
    )
    if not HAS_YAML:
        module.fail_json(msg="hermes_yaml_section needs PyYAML on the target (Debian: python3-yaml)")
    path = module.params["path"]
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    elif module.params["create"]:
        text = ""
    else:
        module.fail_json(msg=f"{path} does not exist")
    section, known = module.params["section"], set(module.params["known"])
    unset = list(module.params["unset"])
    unknown = []
    if known:
        try:
            present = (yaml.safe_load(text) or {}).get(section) or {}
        except (yaml.YAMLError, AttributeError):
            present = {}  # edit() below reports it
        unknown = sorted(
            k for k in present if isinstance(present, dict) and k not in known and k not in unset
        )
        if module.params["unset_unknown"]:
            unset += unknown
        for key in unknown:
            module.warn(f"{path}: {section}.{key} is not read by the installed Hermes")
    try:
        new_text, removed = edit(text, section, module.params["set"], unset)
    except EditError as exc:
        module.fail_json(msg=f"{path}: {exc}")
    keys = sorted(((yaml.safe_load(new_text) or {}).get(module.params["section"]) or {}).keys())
    result = {"changed": new_text != text, "removed": removed, "keys": keys, "path": path, "unknown": unknown}
    if module._diff:
        result["diff"] = {"before": text, "after": new_text, "before_header": path, "after_header": path}
    if result["changed"] and not module.check_mode:
        if module.params["backup"] and os.path.exists(path):
            result["backup_file"] = module.backup_local(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".hermes-pacer-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new_text)
        module.atomic_move(tmp, path, unsafe_writes=module.params["unsafe_writes"])
    file_args = module.load_file_common_arguments(module.params)
    if not module.check_mode and os.path.exists(path):
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
