"""Registry metadata and the README's promises."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema

import stillmotion

ROOT = Path(__file__).resolve().parents[1]


def test_server_json_validates_against_registry_schema() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "server.schema.json").read_text())
    doc = json.loads((ROOT / "server.json").read_text())
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert doc["version"] == project["version"] == stillmotion.__version__
    (pkg,) = doc["packages"]
    assert pkg["identifier"] == project["name"] == "stillmotion" and pkg["version"] == project["version"]
    names = {e["name"] for e in pkg["environmentVariables"]}
    assert {"KLINGAI_API_KEY", "ALIBABA_API_KEY", "XAI_API_KEY", "AI_GATEWAY_API_KEY"} <= names


def test_readme_names_the_server_and_has_a_two_command_quick_start() -> None:
    readme = (ROOT / "README.md").read_text()
    doc = json.loads((ROOT / "server.json").read_text())
    assert f"<!-- mcp-name: {doc['name']} -->" in readme
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", quick, re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "stillmotion demo" in commands[0]
    assert "python -m pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci and "stillmotion demo" in ci
