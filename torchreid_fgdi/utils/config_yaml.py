"""The one reader of config YAML: config files, a run folder's ``run.yaml`` and the config a
checkpoint records all come through here.

A config is a small mapping of sections of plain values, so anything else is refused in one line
naming the file (or where the text came from) and the line, before it can cost anything: PyYAML's
aliases let 1 KB describe a billion strings (and a mapping that contains itself), its safe loader
still reads merge keys (``<<:``) and tags such as ``!!set``, and its errors are tracebacks.
"""

from __future__ import annotations

import yaml
from yaml.events import AliasEvent, NodeEvent, StreamEndEvent

from ..errors import ConfigError

MAX_BYTES = 1 << 20  # a config is a few KB (a dump of every key about 3 KB)
MAX_DEPTH = 16  # sections, keys and lists: a config nests 4 deep
MERGE_TAG = "tag:yaml.org,2002:merge"
PLAIN = "a config holds sections of keys with plain values (numbers, strings, true/false, [lists])"


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses what a config never needs, as it meets it: anchors and
    aliases, explicit tags, merge keys, a second document, keys that are not names, a key given
    twice (PyYAML would keep the last silently, so a section written twice would lose the first
    one's settings), and nesting deeper than `MAX_DEPTH`."""

    def __init__(self, text: str, where: str):
        super().__init__(text)
        self.name = where
        self._depth = 0

    def _refuse(self, mark, problem: str) -> ConfigError:
        return ConfigError(f"{self.name}, line {mark.line + 1}: {problem}")

    def compose_document(self):
        node = super().compose_document()
        if not self.check_event(StreamEndEvent):
            raise self._refuse(
                self.peek_event().start_mark,
                "a second YAML document (after ---); a config file holds one: put the other in a file of its own",
            )
        return node

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor is not None):
            raise self._refuse(
                event.start_mark,
                "anchors and aliases (&name, *name) are not read in a config (they can make a small file "
                "expand without end); write the values out, or share a base with _BASE_",
            )
        if getattr(event, "tag", None) not in (None, "!"):
            tag = event.tag.replace("tag:yaml.org,2002:", "!!")
            raise self._refuse(event.start_mark, f"the tag {tag} is not read in a config; {PLAIN}")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._refuse(event.start_mark, f"nested more than {MAX_DEPTH} levels deep; {PLAIN}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == MERGE_TAG:
                raise self._refuse(key_node.start_mark, "merge keys (<<:) are not read in a config; write the keys out")
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise self._refuse(key_node.start_mark, f"the key {key!r} is not a name; {PLAIN}")
            if key in seen:
                raise ConfigError(
                    f"{self.name}: key {key!r} appears twice (lines {seen[key]} and {line}); "
                    "YAML would keep only the second: merge them into one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _line(text: str | bytes, index: int) -> int:
    return text[:index].count("\n" if isinstance(text, str) else b"\n") + 1


def read_text(path: str) -> str:
    """A config file's text, refused if it is larger than `MAX_BYTES` or not UTF-8."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_BYTES >> 20} MiB; it cannot be a config")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}, line {_line(data, err.start)}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
            "save the config as UTF-8"
        ) from None


def parse_mapping(text: str, where: str) -> dict:
    """The mapping a config's YAML `text` holds ({} for an empty one); `where` names the file or the
    text's origin in every refusal."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_BYTES >> 20} MiB; it cannot be a config")
    if "\0" in text:
        raise ConfigError(f"{where}, line {_line(text, text.index(chr(0)))}: a NUL byte; a config is text")
    loader = _ConfigLoader(text, where)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = "; ".join(p for p in (err.context, err.problem) if p)
        raise ConfigError(f"{where}, line {mark.line + 1}: not valid YAML: {problem}") from None
    except yaml.reader.ReaderError as err:
        raise ConfigError(
            f"{where}, line {_line(text, err.position)}: the character {err.character!r} cannot be in YAML"
        ) from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of sections (model:, data:, ...), not a {type(data).__name__}")
    return data
