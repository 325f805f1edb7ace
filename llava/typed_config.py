"""Config files as typed objects: YAML or JSON text -> a pydantic model, with one error format.

Recipes, speed profiles, eval suites, dataset source tables, model pins, results.json and the doctor's
needs table all load through here, so every mistake reads the same way: the file, then one line per
problem with its dotted key and what was expected there (close keys for a typo, the value found):

    eval/mine.yaml: unknown key 'prompt.max_new_token':
      prompt.max_new_token: unknown key; did you mean prompt.max_new_tokens?
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llava.errors import KitError

M = TypeVar("M", bound=BaseModel)


def parse_document(text: str, origin: str, as_json: bool | None = None) -> Any:
    """The data of a YAML document (JSON when `as_json`, by default when `origin` ends in .json), or an
    error naming line and column."""
    if as_json or (as_json is None and origin.endswith(".json")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise KitError(f"{origin}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise KitError(f"{origin}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None


def read_document(path: str | os.PathLike, missing: str, as_json: bool | None = None) -> Any:
    """Read and parse a config or data file; `missing` is the whole message for a file that is not there."""
    path = Path(path)
    if not path.is_file():
        raise KitError(missing)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise KitError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    return parse_document(text, str(path), as_json)


def read_packaged(resource: str | os.PathLike) -> Any:
    """A data file that ships with the kit (bench shapes, card facts): parsed, or an error naming it."""
    return read_document(str(resource), f"{resource} is missing from the installed kit: reinstall llava-kit")


def schema_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a model accepts, sections and leaves (`training`, `training.max_steps`, ...)."""
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += schema_keys(field.annotation, dotted + ".")
    return keys


def close_keys(dotted: str, model: type[BaseModel]) -> list[str]:
    """Known keys a mistyped one probably meant: a near name in the same section, else the same name
    in another section (`max_steps` -> `training.max_steps`), else a near dotted key anywhere."""
    known = schema_keys(model)
    parent, _, last = dotted.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
    near = difflib.get_close_matches(last, siblings, n=2, cutoff=0.75)
    if near:
        return [f"{parent}.{name}" if parent else name for name in near]
    elsewhere = [k for k in known if k.rpartition(".")[2] == last and k != dotted]
    return elsewhere[:3] or difflib.get_close_matches(dotted, known, n=2, cutoff=0.75)


def set_dotted(body: dict, dotted: str, value: Any, origin: str | None = None) -> None:
    """Set `a.b.c` in a nested dict; a key below a plain value is an error naming `origin`."""
    node = body
    keys = dotted.split(".")
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            section = ".".join(keys[:depth + 1])
            raise KitError(f"{origin or dotted}: {section} is a value ({type(child).__name__} {child!r}), not a "
                           f"section with keys; set it as a whole, e.g. --set {section}=...")
        node = child
    node[keys[-1]] = value


def braces_as_mapping(value: Any) -> bool:
    """YAML reads an unquoted `{checkpoints}` as the mapping {checkpoints: None}."""
    return isinstance(value, dict) and bool(value) and all(v is None for v in value.values())


def key_line(text: str, dotted: str) -> int | None:
    """The 1-based line of `dotted`'s value in a YAML document (yaml's node marks), or None."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((value for key, value in node.value if getattr(key, "value", None) == part), None)
        if node is None:
            return None
    return node.start_mark.line + 1


def _key(item: dict) -> str:
    return ".".join(str(part) for part in item["loc"])


def _what(item: dict, model: type[BaseModel] | None) -> str:
    if item["type"] == "extra_forbidden":
        close = close_keys(_key(item), model) if model else []
        return "unknown key" + (f"; did you mean {' or '.join(close)}?" if close else "")
    if item["type"] == "missing":
        return "missing key (required)"
    message = item["msg"].removeprefix("Value error, ")
    shown = item["input"]
    if item["type"] == "string_type" and braces_as_mapping(shown):
        text = "{" + ", ".join(map(str, shown)) + "}"
        return f"{text} without quotes is a YAML mapping, not text: quote the value, e.g. \"{text}\""
    return message if isinstance(shown, (dict, list)) else f"{message} (got {shown!r})"


def _headline(item: dict, model: type[BaseModel] | None) -> str:
    key = _key(item)
    if not key:
        return _what(item, model)
    if item["type"] == "missing":
        return f"missing key '{key}'"
    if item["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"key '{key}': {_what(item, model)}"


def describe_errors(err: ValidationError, model: type[BaseModel] | None = None,
                    note: Callable[[str], str] | None = None) -> str:
    """One line per problem: dotted key and what is wrong there; `note(key)` may add where it came from."""
    lines = []
    for item in err.errors():
        key = _key(item)
        lines.append(f"  {key or '(top level)'}: {_what(item, model)}" + (note(key) if note else ""))
    return "\n".join(lines)


def config_error(err: ValidationError, origin: str, model: type[BaseModel] | None = None, *,
                 header: str | None = None, note: Callable[[str], str] | None = None) -> KitError:
    """The one error format: `origin: first problem (and N more):` then every problem on its own line."""
    if header is None:
        items = err.errors()
        more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
        header = f"{origin}: {_headline(items[0], model)}{more}"
    return KitError(f"{header}:\n{describe_errors(err, model, note)}")


def validate(model: type[M], raw: Any, origin: str, what: str, **given: Any) -> M:
    """`model` from the parsed data (plus fields the caller sets, e.g. source=path), or the error."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise KitError(f"{origin}: a {what} is a mapping of keys, not a {type(raw).__name__}")
    try:
        return model.model_validate({**raw, **given})
    except ValidationError as err:
        raise config_error(err, origin, model) from None


def load_config(model: type[M], path: str | os.PathLike, what: str, missing: str | None = None,
                **given: Any) -> M:
    """Read, parse and validate a config file: the one loader every YAML/JSON config goes through."""
    raw = read_document(path, missing or f"{what} file {path} does not exist")
    return validate(model, raw, str(path), what, **given)
