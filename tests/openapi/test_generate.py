"""The generator: committed files are current, and the schemas match the client's models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3py.cluster.server.openapi import v2_document
from tools.openapi import generate
from tools.openapi.descriptions import parse_docstring

kubernetes_models = pytest.importorskip("kubernetes.client.models")


def test_committed_files_are_what_the_generator_writes(capsys: pytest.CaptureFixture[str]) -> None:
    # Fails when RESOURCES, the curation tables or the client's version changed without
    # regenerating: the message names the command to run.
    assert generate.main(["--check"]) == 0, capsys.readouterr().err


def test_generator_writes_a_complete_directory(tmp_path: Path) -> None:
    (tmp_path / "stale.json.gz").write_bytes(b"old")
    assert generate.main(["--output-dir", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    names = {manifest["v2"]["file"], manifest["v2_protobuf"]["file"]}
    names |= {"fields.json.gz", "manifest.json"}
    names |= {entry["file"] for entry in manifest["v3"].values()}
    assert {p.name for p in tmp_path.iterdir()} == names
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 0


def test_every_definition_has_the_fields_of_its_client_model() -> None:
    definitions = json.loads(v2_document())["definitions"]
    checked = 0
    for name, definition in definitions.items():
        short = name.rsplit(".", 1)[1]
        prefixes = ("CoreV1", "V1") if ".core.v1." in name else ("V1",)
        models = [getattr(kubernetes_models, p + short, None) for p in prefixes]
        model = next((m for m in models if m is not None), None)
        if model is None:
            continue
        if "properties" not in definition:
            continue
        assert set(definition["properties"]) == set(model.attribute_map.values()), name
        checked += 1
    assert checked > 150


def test_lightkube_docstrings_split_into_type_and_field_descriptions() -> None:
    doc = """Lease defines a lease concept.

**parameters**

* **metadata** ``Optional[meta_v1.ObjectMeta]`` - More info:
  https://example.invalid/metadata
* **spec** ``Optional[LeaseSpec]`` - spec contains the specification of the Lease.
"""
    docs = parse_docstring(doc)
    assert docs.description == "Lease defines a lease concept."
    assert docs.fields == {
        "metadata": "More info: https://example.invalid/metadata",
        "spec": "spec contains the specification of the Lease.",
    }
