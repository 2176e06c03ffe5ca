"""Decoding the objects a pipeline outputs (CLIXML, MS-PSRP 2.2.5) without pypsrp's per-element cost.

pypsrp's Serializer re-serializes every element it decodes (`ET.tostring`, kept as the object's raw
XML) before it looks at the tag, so a ServiceController with its nested arrays is written back to
text once per level of nesting: most of the client's CPU per call. The output objects the product
reads are plain property bags (ServiceController, Process, CIM instances), decoded here in one walk
into the same GenericComplexObject pypsrp builds, without the raw XML nothing reads. Every PSRP
message (pool and pipeline states, error records, host calls) and any object of a type pypsrp
knows (`System.Management.Automation.*`, collections at the top) still goes through pypsrp.
"""

from __future__ import annotations

import base64
import copy
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from pypsrp.complex_objects import Command, GenericComplexObject
from pypsrp.serializer import Serializer


def _text(el: ET.Element) -> str:
    return el.text or ""


_NUMBERS: dict[str, Callable[[str], Any]] = {
    "By": int,
    "SB": int,
    "U16": int,
    "I16": int,
    "U32": int,
    "I32": int,
    "U64": int,
    "I64": int,
    "Sg": float,
    "Db": float,
}
# Kept as text, as pypsrp keeps them.
_AS_TEXT = {"DT", "TS", "D", "Version"}
_CONTAINERS = {"LST", "IE", "STK", "QUE", "DCT"}


class LeanSerializer(Serializer):
    """pypsrp's Serializer, with pipeline output objects decoded in one walk."""

    def deserialize(self, element: Any, metadata: Any = None, clear: bool = True) -> Any:
        # Pipeline output is the only message pypsrp decodes from text with no metadata.
        if metadata is None and clear and isinstance(element, str):
            try:
                root = ET.fromstring(element)
            except ET.ParseError:
                return super().deserialize(element, metadata, clear)
            if root.tag == "Obj" and _plain(root):
                self._clear()
                return _Walk(self).value(root)
        return super().deserialize(element, metadata, clear)


def _plain(root: ET.Element) -> bool:
    """An object pypsrp has no class of its own for: a property bag (or an enum value)."""
    names = [t.text or "" for tn in root.iter("TN") for t in tn]
    return not any(
        n.startswith(("System.Management.Automation.", "Deserialized.System.Management.Automation."))
        for n in names
    ) and not any(child.tag in _CONTAINERS for child in root)


class _Walk:
    def __init__(self, serializer: Serializer) -> None:
        self._serializer = serializer
        self._refs: dict[str, Any] = {}
        self._types: dict[str, list[str]] = {}

    def string(self, value: str | None) -> str:
        # _xHHHH_ escapes are rare; pypsrp's decoder for them is costly, so only when present.
        if not value:
            return ""
        return value if "_x" not in value else str(self._serializer._deserialize_string(value))

    def value(self, el: ET.Element) -> Any:
        tag = el.tag
        if tag in ("S", "ToString", "URI", "XD", "SBK"):
            return self.string(el.text)
        if (number := _NUMBERS.get(tag)) is not None:
            return number(_text(el))
        if tag == "B":
            return _text(el).lower() == "true"
        if tag in _AS_TEXT:
            return el.text
        if tag == "Nil":
            return None
        if tag == "C":
            return chr(int(_text(el)))
        if tag == "G":
            return uuid.UUID(_text(el))
        if tag == "BA":
            return base64.b64decode(_text(el))
        if tag == "Ref":
            return self._refs.get(el.attrib["RefId"])
        if tag == "Obj":
            return self.obj(el)
        # Anything else (a secure string, say) as pypsrp decodes it.
        return self._serializer.deserialize(el, clear=False)

    def obj(self, el: ET.Element) -> Any:
        ref = el.attrib.get("RefId")
        for child in el:
            if child.tag in ("LST", "IE", "STK", "QUE"):
                items = [self.value(item) for item in child]
                if ref is not None:
                    self._refs[ref] = items
                return items
            if child.tag == "DCT":
                table = {self.value(entry[0]): self.value(entry[1]) for entry in child if len(entry) == 2}
                if ref is not None:
                    self._refs[ref] = table
                return table
        obj = GenericComplexObject()
        if ref is not None:
            self._refs[ref] = obj
        for child in el:
            tag = child.tag
            if tag == "TN":
                obj.types = [t.text or "" for t in child]
                self._types[child.attrib.get("RefId", "")] = obj.types
            elif tag == "TNRef":
                obj.types = self._types.get(child.attrib.get("RefId", ""), [])
            elif tag == "Props":
                for member in child:
                    obj.adapted_properties[member.attrib.get("N", "")] = self.value(member)
            elif tag == "MS":
                for member in child:
                    obj.extended_properties[member.attrib.get("N", "")] = self.value(member)
            elif tag == "ToString":
                obj.to_string = self.string(child.text)
            else:
                obj.property_sets.append(self.value(child))
        return obj


class LeanCommand(Command):
    """A pipeline command pypsrp copies cheaply.

    pypsrp deep-copies every command each time it serializes a pipeline (for XML libraries where an
    element cannot have two parents); a deep copy also walks the command's property metadata and
    merge settings, hundreds of objects per command. Only the argument list is the command's own
    mutable state, and the serializer builds fresh elements from values either way."""

    def __deepcopy__(self, memo: dict[int, Any]) -> LeanCommand:
        twin = copy.copy(self)
        twin.args = list(self.args)
        return twin
