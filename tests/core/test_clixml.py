"""The lean CLIXML decoder gives what pypsrp's own Serializer gives, for the shapes a node sends; the
service graph read from them."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pypsrp.complex_objects import Command, CommandParameter, GenericComplexObject, ObjectMeta
from pypsrp.serializer import Serializer

from orchestrator.remote.clixml import LeanCommand, LeanSerializer
from orchestrator.remote.cmdlets import service_graph
from orchestrator.remote.errors import prop

# A ServiceController as remoting serializes it: adapted .NET properties, an ETS alias, an enum
# status, nested controllers in arrays (the second reusing the first's type names), a Ref.
SERVICE = """<Obj RefId="0">
  <TN RefId="0"><T>System.ServiceProcess.ServiceController</T><T>System.ComponentModel.Component</T>
  <T>System.Object</T></TN>
  <ToString>System.ServiceProcess.ServiceController</ToString>
  <Props>
    <B N="CanPauseAndContinue">false</B>
    <B N="CanStop">true</B>
    <S N="DisplayName">World Wide Web Publishing Service_x000A_(test)</S>
    <Obj N="DependentServices" RefId="1">
      <TN RefId="1"><T>System.ServiceProcess.ServiceController[]</T><T>System.Array</T>
      <T>System.Object</T></TN>
      <LST>
        <Obj RefId="2"><TNRef RefId="0" /><ToString>System.ServiceProcess.ServiceController</ToString>
          <Props><S N="ServiceName">W3LOGSVC</S>
            <Obj N="Status" RefId="3">
              <TN RefId="2"><T>System.ServiceProcess.ServiceControllerStatus</T><T>System.Enum</T>
              <T>System.ValueType</T><T>System.Object</T></TN>
              <ToString>Running</ToString><I32>4</I32>
            </Obj>
          </Props>
        </Obj>
      </LST>
    </Obj>
    <S N="MachineName">.</S>
    <S N="ServiceName">W3SVC</S>
    <Ref N="ServicesDependedOn" RefId="1" />
    <Obj N="Status" RefId="4"><TNRef RefId="2" /><ToString>Stopped</ToString><I32>1</I32></Obj>
    <Nil N="Site" />
    <I64 N="Big">9007199254740993</I64>
    <DT N="When">2026-12-02T08:00:00+00:00</DT>
    <G N="Id">3f2b1c3a-9a2e-4d5c-8a8f-0d1c2b3a4e5f</G>
    <Obj N="Table" RefId="5"><TN RefId="3"><T>System.Collections.Hashtable</T><T>System.Object</T></TN>
      <DCT><En><S N="Key">a</S><I32 N="Value">1</I32></En></DCT>
    </Obj>
  </Props>
  <MS><S N="Name">W3SVC</S><Obj N="RequiredServices" RefId="6"><TNRef RefId="1" /><LST /></Obj></MS>
</Obj>"""

CUSTOM = """<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>
<T>System.Object</T></TN><MS><S N="Value">Started</S></MS></Obj>"""


def plain(value: Any, depth: int = 0) -> Any:
    """A comparable picture of a decoded value."""
    if depth > 6:
        return "..."
    if isinstance(value, GenericComplexObject):
        return {
            "types": list(value.types),
            "to_string": value.to_string,
            "adapted": {k: plain(v, depth + 1) for k, v in value.adapted_properties.items()},
            "extended": {k: plain(v, depth + 1) for k, v in value.extended_properties.items()},
            "sets": [plain(v, depth + 1) for v in value.property_sets],
        }
    if isinstance(value, list):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: plain(v, depth + 1) for k, v in value.items()}
    return value


@pytest.mark.parametrize("xml", [SERVICE, CUSTOM], ids=["service-controller", "known-type"])
def test_decodes_as_pypsrp_does(xml: str) -> None:
    assert plain(LeanSerializer().deserialize(xml)) == plain(Serializer().deserialize(xml))


def test_what_the_product_reads_comes_through() -> None:
    obj = LeanSerializer().deserialize(SERVICE)
    assert prop(obj, "Name") == "W3SVC"
    assert str(prop(obj, "Status")) == "Stopped"
    assert prop(obj, "DisplayName") == "World Wide Web Publishing Service\n(test)"
    dependents = prop(obj, "DependentServices")
    assert [prop(d, "ServiceName") for d in dependents] == ["W3LOGSVC"]
    assert str(prop(dependents[0], "Status")) == "Running"
    # The Ref resolves to the same list object.
    assert prop(obj, "ServicesDependedOn") is dependents
    assert prop(obj, "Big") == 9007199254740993 and prop(obj, "Site") is None


def test_a_lean_command_serializes_as_a_pypsrp_command() -> None:
    def xml(command: Any) -> bytes:
        twin = copy.deepcopy(command)
        element = Serializer().serialize(twin, ObjectMeta("Obj", object=Command))
        assert element is not None
        return ET.tostring(element)

    lean = LeanCommand("Stop-Service", protocol_version="2.3", is_script=False)
    full = Command("Stop-Service", protocol_version="2.3", is_script=False)
    for command in (lean, full):
        command.args.append(CommandParameter(name="Name", value=["W3SVC", "WAS"]))
        command.args.append(CommandParameter(name="NoWait", value=True))
    assert xml(lean) == xml(full)
    # The copy has its own argument list: adding to it leaves the original as it was.
    twin = copy.deepcopy(lean)
    twin.args.append(CommandParameter(name="PassThru", value=True))
    assert len(lean.args) == 2


# Get-Service -Name W3SVC as a node serializing one level less deeply would send it: the nested
# controllers are only their ToString, without a name.
SHALLOW = """<Obj RefId="0">
  <TN RefId="0"><T>System.ServiceProcess.ServiceController</T><T>System.Object</T></TN>
  <Props>
    <S N="ServiceName">W3SVC</S>
    <Obj N="ServicesDependedOn" RefId="1">
      <TN RefId="1"><T>System.ServiceProcess.ServiceController[]</T><T>System.Object</T></TN>
      <LST><S>System.ServiceProcess.ServiceController</S></LST>
    </Obj>
    <Obj N="Status" RefId="2"><TN RefId="2"><T>System.ServiceProcess.ServiceControllerStatus</T>
      <T>System.Enum</T></TN><ToString>Running</ToString><I32>4</I32></Obj>
  </Props>
</Obj>"""


def test_the_graph_comes_from_the_controllers_own_arrays() -> None:
    graph = service_graph([LeanSerializer().deserialize(SERVICE)])
    assert graph.found["W3SVC"].status == "Stopped"
    assert graph.dependents == {"W3SVC": ["W3LOGSVC"]}
    assert graph.requires == {"W3SVC": ["W3LOGSVC"]}  # the sample's Ref points at the same array
    assert graph.nested["W3LOGSVC"].status == "Running"


def test_arrays_without_names_are_left_for_the_per_service_lookups() -> None:
    graph = service_graph([LeanSerializer().deserialize(SHALLOW)])
    assert graph.found["W3SVC"].status == "Running"
    assert "W3SVC" not in graph.requires and graph.nested == {}
