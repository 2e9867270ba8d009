"""The emulator's undo side and device value, as docs/reference §12 describes them: what `response
undo` and the releases rely on is refused exactly where Defender would refuse it."""

from __future__ import annotations

import pytest

from shared.defender.errors import DefenderError
from tests.integration.test_emulator import ALICE, client, trust_emulator
from tests.support import LIMITED_CLIENT
from tools.emulator.common import ApiError
from tools.emulator.server import EmulatorServer

pytestmark = pytest.mark.integration
__all__ = ["trust_emulator"]  # the fixture that makes the emulator's certificate trusted


def test_release_actions_need_the_permission_of_what_they_release(emulator: EmulatorServer) -> None:
    api = client(emulator)
    for segment, kind in (("unisolate", "Unisolate"), ("unrestrictCodeExecution", "UnrestrictCodeExecution")):
        assert api.machine_action(ALICE, segment, {"Comment": "release"})["type"] == kind
    with pytest.raises(DefenderError, match="Comment is required"):
        api.machine_action(ALICE, "unisolate", {})
    limited = client(emulator, client=LIMITED_CLIENT[0], secret=LIMITED_CLIENT[1])
    with pytest.raises(DefenderError) as refused:
        limited.machine_action(ALICE, "unrestrictCodeExecution", {"Comment": "x"})
    assert refused.value.status == 403 and "Machine.RestrictExecution" in refused.value.message


def test_a_tag_is_removed_and_an_indicator_deleted_once(emulator: EmulatorServer) -> None:
    api = client(emulator)
    api.tag_machine(ALICE, "NoxysRisk")
    assert "NoxysRisk" in (api.get_machine(ALICE) or {})["machineTags"]
    api.tag_machine(ALICE, "NoxysRisk", "Remove")
    assert "NoxysRisk" not in (api.get_machine(ALICE) or {})["machineTags"]
    with pytest.raises(DefenderError, match=r"Action \(Add\|Remove\)"):
        api.tag_machine(ALICE, "NoxysRisk", "Delete")
    found = api.add_indicator(
        {"indicatorValue": "chatgpt.com", "indicatorType": "DomainName", "action": "Block", "title": "t",
         "description": "d"}
    )  # fmt: skip
    assert api.delete_indicator(found["id"]) is True
    assert api.delete_indicator(found["id"]) is False  # 404: already gone
    again = api.add_indicator(
        {"indicatorValue": "chatgpt.com", "indicatorType": "DomainName", "action": "Block", "title": "t",
         "description": "d"}
    )  # fmt: skip
    assert again["id"] != found["id"]  # an id is never reused


def test_device_value_is_one_of_its_documented_values(emulator: EmulatorServer) -> None:
    assert (client(emulator).get_machine(ALICE) or {})["deviceValue"] == "Normal"
    emulator.state.set_machine(ALICE, device_value="High")
    assert (client(emulator).get_machine(ALICE) or {})["deviceValue"] == "High"
    with pytest.raises(ApiError, match="DeviceValue must be one of Normal, Low, High"):
        emulator.state.set_machine(ALICE, device_value="Critical")
