"""Fixtures for the QEMU tier: images built once per session (shared with the image tier)."""

from __future__ import annotations

import shutil

import pytest

from tests.image.builds import BuiltImage, ImageFor, built_image


@pytest.fixture
def image_for(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ImageFor:
    """``image_for(board, role)``: the session's built image for that board and role."""
    for tool in ("qemu-system-aarch64", "qemu-system-arm", "mcopy"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run 'make setup' (it installs the QEMU tier's tools)")

    def get(board: str, role: str) -> BuiltImage:
        return built_image(request, tmp_path_factory, board, role)

    return get
