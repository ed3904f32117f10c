"""Reading a campaign file's YAML safely, keeping the line of every key for error messages.

No aliases (no alias bombs), no Python tags (SafeLoader), no duplicate keys: each is an
error that names its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

_PASSWORD_HINT = (
    "passwords never go in the campaign file; set `password_env: VARIABLE` under `smtp:` "
    "and put the password in that environment variable (default MAILMERGE_SMTP_PASSWORD), "
    "or let `mailmerge send` prompt for it"
)


class _LineDict(dict):  # type: ignore[type-arg]
    """A mapping that remembers the line of each key."""

    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    """Safe loader that refuses aliases and duplicate keys and records key lines."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not supported in campaign files; "
                "write the value out", event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _LineDict:
    result = _LineDict()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping cannot be a key; a value that starts with {{ must be "
                "in quotes, e.g. to: \"{{ email }}\"", key_node.start_mark)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {result.lines[key]})",
                key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Reader:
    """Typed access to a mapping from the YAML file, with errors that name key and line."""

    def __init__(self, data: Any, path: Path, prefix: str, line: int | None) -> None:
        self.data, self.path, self.prefix, self.line = data, path, prefix, line

    def error(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        line = self.data.lines.get(key, self.line) if key is not None else self.line
        return ConfigError(message, path=self.path, line=line, hint=hint)

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.data:
            if key == "password":
                raise self.error(key, f"`{self.prefix}password` is not allowed", _PASSWORD_HINT)
            if key not in allowed:
                import difflib  # only for a mistyped key

                close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
                hint = f"did you mean `{close[0]}`?" if close else (
                    "known keys: " + ", ".join(sorted(allowed)))
                raise self.error(key, f"unknown key `{self.prefix}{key}`", hint)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required and key in self.data:
                raise self.error(key, f"`{self.prefix}{key}` has no value (YAML reads an empty "
                                      "value, `null` and `~` as none)",
                                 f'give it one; a value that is one of those words goes in '
                                 f'quotes: {key}: "null"')
            if required:
                raise self.error(None, f"missing required key `{self.prefix}{key}`",
                                 f"add `{key}:` to the campaign file")
            return default
        value = self.data[key]
        if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if kind is bool and not isinstance(value, bool):
            raise self.error(key, f"`{self.prefix}{key}` must be true or false, not {value!r}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            wanted = {"str": "a text", "int": "a whole number", "float": "a number",
                      "dict": "a mapping", "list": "a list"}.get(names, names)
            texts = str in kind if isinstance(kind, tuple) else kind is str
            quote = texts and isinstance(value, (bool, int, float))
            raise self.error(key, f"`{self.prefix}{key}` must be {wanted}, "
                                  f"not {type(value).__name__} {value!r}",
                             'YAML reads yes, no, on, off, true, false and numbers as such: '
                             f'put the text in quotes ({key}: "yes")' if quote else None)
        return value

    def sub(self, key: str) -> Reader | None:
        value = self.get(key, dict)
        if value is None:
            return None
        return Reader(value, self.path, f"{self.prefix}{key}.", self.data.lines.get(key))




def load_yaml(text: str, path: Path) -> Any:
    """The YAML in ``text`` (read from ``path``). Raises ConfigError naming the line."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise ConfigError("the YAML is nested too deeply", path=path,
                          hint="a campaign file needs a few levels, not thousands") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"not valid YAML: {exc.problem or exc}", path=path, line=line,
                          hint="fix the YAML syntax (indentation, quotes around values "
                               "that start with {{ )") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from exc
    if not isinstance(data, _LineDict):
        raise ConfigError("the campaign file must be a mapping of keys such as `name:`, "
                          "`from:`, `subject:`", path=path)
    return data
