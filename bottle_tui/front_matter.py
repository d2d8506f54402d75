"""Reading the YAML front matter of a manifest and checking its values: every problem is a
one-line ManifestError naming the file and the dotted key path, what is wrong and what to do."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from bottle_contract import policy

from .errors import BottleError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


class ManifestError(BottleError):
    """A bad agent or bottle file: ``<path>: <key>: <problem>`` on one line."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = " ".join(problem.split())
        super().__init__(f"{path}: {key}: {self.problem}" if key else f"{path}: {self.problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.key, self.problem))


_T = TypeVar("_T")


def sub_key(key: str, child: str) -> str:
    return f"{key}.{child}" if key else child


def item_key(key: str, index: int) -> str:
    return f"{key}[{index}]"


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "bool"
    return type(value).__name__


def shown(value: object) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1) or difflib.get_close_matches(word.lower(), choices, n=1)
    return f"did you mean '{match[0]}'?" if match else f"use one of: {', '.join(choices)}"


class Checker:
    """Typed reads of one file's front matter; a failure names the file and the key path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ManifestError(self.path, key, problem)

    def _wrong(self, key: str, expected: str, value: object, example: str) -> NoReturn:
        self.fail(key, f"expected {expected}, got {kind_of(value)}" + (f"; write e.g. {example}" if example else ""))

    def known_keys(self, key: str, mapping: dict[Any, Any], allowed: tuple[str, ...]) -> None:
        for name in mapping:
            if name not in allowed:
                self.fail(sub_key(key, str(name)), f"unknown key '{shown(name)}'; {did_you_mean(str(name), allowed)}")

    def required(self, key: str, mapping: dict[Any, Any], child: str, hint: str) -> Any:
        value = mapping.get(child)
        if value is None:
            self.fail(sub_key(key, child), f"missing; {hint}")
        return value

    def expect_mapping(self, key: str, value: object, example: str = "") -> dict[Any, Any]:
        if not isinstance(value, dict):
            self._wrong(key, "a mapping", value, example)
        return value

    def expect_list(self, key: str, value: object, example: str = "", *, non_empty: str = "") -> list[Any]:
        if not isinstance(value, list):
            self._wrong(key, "a list", value, example)
        if non_empty and not value:
            self.fail(key, f"empty list; {non_empty}")
        return value

    def expect_str(self, key: str, value: object, example: str = "", *, allow_empty: bool = False) -> str:
        if isinstance(value, (bool, int, float)) or kind_of(value) in ("date", "datetime"):
            self.fail(key, f"expected a string, got {kind_of(value)}; quote the value, e.g. '{shown(value)}'")
        if not isinstance(value, str):
            self._wrong(key, "a string", value, example)
        if not value.strip() and not allow_empty:
            self.fail(key, "empty string" + (f"; write e.g. {example}" if example else ""))
        return value.strip()

    def expect_str_list(self, key: str, value: object, example: str = "", *, non_empty: str = "") -> list[str]:
        items = self.expect_list(key, value, example, non_empty=non_empty)
        return [self.expect_str(item_key(key, i), item) for i, item in enumerate(items)]

    def expect_int(self, key: str, value: object, example: str = "", *, low: int = 1, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, "an integer", value, example)
        if value < low or (high is not None and value > high):
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.fail(key, f"{value} is out of range; it must be {limit}")
        return value

    def expect_bool(self, key: str, value: object, example: str = "") -> bool:
        if not isinstance(value, bool):
            self._wrong(key, "true or false", value, example)
        return value

    def expect_choice(self, key: str, value: object, choices: tuple[str, ...], what: str) -> str:
        text = self.expect_str(key, value, choices[0])
        if text not in choices:
            self.fail(key, f"unknown {what} '{shown(text)}'; {did_you_mean(text, choices)}")
        return text

    def expect_name(self, key: str, value: object, what: str) -> str:
        text = self.expect_str(key, value, f"{key}: dev" if what == "bottle" else f"{key}: web-app")
        if not NAME_RE.match(text):
            self.fail(
                key,
                f"'{shown(text)}' is not a valid {what} name; use 1-31 lowercase letters, digits and '-', "
                "starting with a letter or digit (it becomes part of container names)",
            )
        return text

    def expect_env_name(self, key: str, value: object, example: str = "GITHUB_TOKEN") -> str:
        text = self.expect_str(key, value, example)
        if not policy.ENV_NAME_RE.match(text):
            self.fail(
                key,
                f"'{shown(text)}' is not an environment variable name; use letters, digits and '_', "
                f"not starting with a digit, e.g. {example}",
            )
        return text

    def optional(
        self, mapping: dict[Any, Any], key: str, child: str, read: Callable[[str, Any], _T], default: _T
    ) -> _T:
        value = mapping.get(child)
        return default if value is None else read(sub_key(key, child), value)


# --- front matter -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects a key written twice in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{shown(key)}' appears twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _yaml_hint(problem: str, line: str) -> str:
    if "\\t" in problem or "\t" in line[: len(line) - len(line.lstrip())]:
        return "indent with spaces, not tabs"
    if "appears twice" in problem:
        return "remove one of them"
    if re.search(r"(?:^|[:\-\[,])\s*\*", line):
        return 'quote wildcard hosts, e.g. host: "*.example.com"'
    return "check the indentation, and quote values that contain ': ' or start with '*', '&', '!', '@' or '`'"


def read_front_matter(ck: Checker, text: str) -> tuple[dict[Any, Any], str]:
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[0].rstrip() != "---":
        ck.fail("", "no front matter; the file must start with a '---' line, then YAML keys, then another '---' line")
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        ck.fail("", "front matter opened on line 1 is never closed; add a '---' line after the YAML keys")
    try:
        data = yaml.load("\n".join(lines[1:end]), Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        if mark is None:
            ck.fail("", f"invalid YAML: {problem}; {_yaml_hint(problem, '')}")
        line = lines[1 + mark.line] if 1 + mark.line < end else ""
        ck.fail("", f"invalid YAML at line {mark.line + 2}: {problem}; {_yaml_hint(problem, line)}")
    except yaml.reader.ReaderError as exc:
        at = "\n".join(lines[1:end])[: exc.position].count("\n") + 2
        ck.fail(
            "",
            f"invalid YAML at line {at}: character {exc.character if isinstance(exc.character, str) else chr(exc.character)!r} is not allowed; remove it",
        )
    except RecursionError:
        ck.fail("", "invalid YAML: nested too deeply; flatten the front matter")
    except Exception as exc:  # any other loader failure (e.g. a bad !!timestamp) is the file's fault
        ck.fail("", f"invalid YAML: {exc}; fix the value, or quote it to keep it as text")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        ck.fail(
            "", f"front matter must be YAML keys (a mapping), got {kind_of(data)}; write e.g. 'description: ...' lines"
        )
    return data, "\n".join(lines[end + 1 :])
