"""Writing ``docs/openapi.json`` and ``docs/http-api.md`` from the app's OpenAPI spec.

``python -m scheduler.http.docs [FOLDER]`` writes both files into FOLDER
(default ``docs``); a test fails when the committed files differ from the
spec of the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from scheduler.http.app import HttpSettings, build_api

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def openapi_spec() -> dict[str, Any]:
    """Return the OpenAPI spec of the HTTP API, built without any connection."""
    return build_api(HttpSettings(token=None)).openapi()


def write_docs(folder: Path) -> list[Path]:
    """Write ``openapi.json`` and ``http-api.md`` into ``folder``; return their paths."""
    spec = openapi_spec()
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "openapi.json"
    spec_path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    reference_path = folder / "http-api.md"
    reference_path.write_text(render_reference(spec))
    return [spec_path, reference_path]


def render_reference(spec: dict[str, Any]) -> str:
    """Render the Markdown reference of ``spec``: endpoints, then schemas."""
    lines = [
        f"# {spec['info']['title']} HTTP API, version {spec['info']['version']}",
        "",
        "Generated from the OpenAPI spec (`docs/openapi.json`, also served at",
        "`/openapi.json`) by `python -m scheduler.http.docs docs`; edit the code, not",
        "this file.",
        "",
        spec["info"].get("description", "").strip(),
        "",
        "| method | path | summary |",
        "|---|---|---|",
    ]
    operations = list(_operations(spec))
    for method, path, operation in operations:
        lines.append(
            f"| {method.upper()} | `{path}` | {operation.get('summary', '')} |"
        )
    lines.append("")
    for method, path, operation in operations:
        lines += _render_operation(method, path, operation)
    lines += ["## Schemas", ""]
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        lines += _render_schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, path_item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in path_item:
                found.append((method, path, path_item[method]))
    return found


def _render_operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"## {method.upper()} `{path}`", ""]
    if operation.get("summary"):
        lines += [f"**{operation['summary']}.**", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    auth = (
        "bearer token, when the server has one" if operation.get("security") else "none"
    )
    lines += [f"Authentication: {auth}.", ""]

    parameters = operation.get("parameters", [])
    if parameters:
        lines += [
            "| parameter | in | type | required | description |",
            "|---|---|---|---|---|",
        ]
        for parameter in parameters:
            schema = parameter.get("schema", {})
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_type_of(schema)} | "
                f"{'yes' if parameter.get('required') else 'no'} | "
                f"{_cell(parameter.get('description', ''))}{_default(schema)} |"
            )
        lines.append("")

    body = operation.get("requestBody")
    if body:
        for media_type, content in body.get("content", {}).items():
            lines += [
                f"Request body, `{media_type}`: {_type_of(content.get('schema', {}))}.",
                "",
            ]
            for example in content.get("schema", {}).get("examples", []):
                lines += ["```json", json.dumps(example, indent=2), "```", ""]

    lines += ["| status | media type | body | description |", "|---|---|---|---|"]
    for status, response in sorted(operation.get("responses", {}).items()):
        contents = response.get("content") or {"": {}}
        for media_type, content in contents.items():
            body_type = _type_of(content["schema"]) if "schema" in content else ""
            shown_media_type = f"`{media_type}`" if media_type else ""
            lines.append(
                f"| {status} | {shown_media_type} | {body_type} | {_cell(response.get('description', ''))} |"
            )
    lines.append("")
    return lines


def _render_schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_paragraph(schema["description"]), ""]
    if "enum" in schema:
        values = ", ".join(f"`{value}`" for value in schema["enum"])
        lines += [f"One of {values}.", ""]
    properties = schema.get("properties", {})
    if not properties:
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, field_schema in properties.items():
        lines.append(
            f"| `{field}` | {_type_of(field_schema)} | {'yes' if field in required else 'no'} | "
            f"{_cell(field_schema.get('description', ''))}{_default(field_schema)} |"
        )
    lines.append("")
    return lines


def _type_of(schema: dict[str, Any]) -> str:
    """Describe a JSON Schema in a few words, linking named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_type_of(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = str(schema.get("type", "any"))
    details = []
    if "format" in schema:
        details.append(schema["format"])
    if "pattern" in schema:
        details.append(f"pattern `{schema['pattern']}`")
    for key, label in (
        ("minimum", "min"),
        ("maximum", "max"),
        ("maxLength", "max length"),
    ):
        if key in schema:
            details.append(f"{label} {schema[key]}")
    return f"{kind} ({', '.join(details)})" if details else kind


def _default(schema: dict[str, Any]) -> str:
    if "default" not in schema or schema["default"] is None:
        return ""
    return f" (default `{json.dumps(schema['default'])}`)"


def _cell(text: str) -> str:
    """Return ``text`` on one line, with pipes escaped, for a table cell."""
    return _paragraph(text).replace("|", "\\|")


def _paragraph(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    for written in write_docs(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")):
        print(written)
