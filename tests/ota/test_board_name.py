"""The board an image was built for: read from the root slot, labelled on the node, checked
against the boards a bundle names."""

from __future__ import annotations

from pathlib import Path

from k3py.cluster.agent.node.machine import BOARD_LABEL, Machine, board_name
from k3py.cluster.agent.node.registration import NodeReporter, NodeSpec
from k3py.cluster.client import FakeClock
from k3py.cluster.client.fake import FakeApi
from k3py.cluster.ota.apply import running_system
from k3py.cluster.server.controllers.base import NODES


async def test_the_board_file_names_the_node_and_the_running_system(tmp_path: Path) -> None:
    board_file = tmp_path / "board"
    assert board_name(board_file) == ""  # installed on a machine, not from an image
    assert running_system("0.1.0", board_file).board == "unknown"
    board_file.write_text("rpi4-arm64\n")
    assert board_name(board_file) == "rpi4-arm64"
    assert running_system("0.1.0", board_file).board == "rpi4-arm64"
    api = FakeApi(FakeClock())
    machine = Machine(2, 1 << 30, 1 << 34, 110, "m", "b", "6.1", "Debian", "arm64", "rpi4-arm64")
    spec = NodeSpec("pi", ("192.0.2.10",), "pi", (), (), tmp_path)

    async def version() -> str:
        return "docker://20.10"

    await NodeReporter(api, FakeClock(), spec, machine, version).register()
    (node,) = api.objects(NODES)
    assert node["metadata"]["labels"][BOARD_LABEL] == "rpi4-arm64"
