"""The explorer's two pages: the app itself and the documentation of its JSON API.

The app page carries its own script and style, like every attnscope page: the view script
from :mod:`attnscope.render` (the same file the saved views use), the report's chart script
(the corpus browser's layer plots) and the app's script, inlined into one function so none
defines a global name. It loads nothing from anywhere else; its
only requests are to the explorer's own API.

The documentation page is plain HTML written from the OpenAPI schema on the server, so it too
works offline (FastAPI's usual /docs page loads Swagger UI from a CDN).
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from typing import Any

from attnscope.render.html import script_json, view_assets

__all__ = ["docs_page", "explorer_page"]

ASSETS = Path(__file__).with_name("assets")


@functools.cache
def _asset(name: str) -> str:
    text = (ASSETS / name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise RuntimeError(f"asset {name} must not contain a closing script or style tag")
    return text


def explorer_page(config: dict[str, Any]) -> str:
    """The app page. ``config`` is the body of ``GET /api/models`` (models and limits), put in
    the page so the first draw needs no request."""
    from attnscope.render.html import _asset as render_asset

    views_js, views_css = view_assets()
    # The report's chart script draws the corpus browser's layer plots; in its own function,
    # so its names never meet the view script's.
    charts_js = ("const exCharts = (function(){\n" + render_asset("report.js")
                 + "\nreturn attnscopeCharts;\n})();")
    script = ("(function(){\n" + views_js + "\n" + charts_js + "\n" + _asset("app.js") + "\n"
              + _asset("generate.js") + "\n})();")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # an empty icon: the browser asks the server for none
        "<title>attnscope explorer</title><link rel=\"icon\" href=\"data:,\">"
        f"<style>{views_css}\n{_asset('app.css')}</style></head>\n"
        f"<body class=\"attnscope-page explorer\">\n{_asset('app.html')}\n"
        f'<script type="application/json" id="explorer-config">{script_json(config)}</script>\n'
        f"<script>{script}</script>\n</body></html>\n"
    )


def docs_page(schema: dict[str, Any]) -> str:
    """A readable page for an OpenAPI schema: every route with its fields and answers."""
    esc = html.escape
    components = schema.get("components", {}).get("schemas", {})
    info = schema.get("info", {})
    out = [f"<h1>{esc(info.get('title', 'API'))} {esc(info.get('version', ''))}</h1>",
           f"<p>{esc(info.get('summary', ''))}</p><p>{esc(info.get('description', ''))}</p>",
           '<p>The schema itself: <a href="/openapi.json">/openapi.json</a>. '
           'The explorer: <a href="/">/</a>.</p>']
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            out.append(f'<h2 id="{esc(method + path)}"><code>{esc(method.upper())} '
                       f"{esc(path)}</code> {esc(op.get('summary', ''))}</h2>")
            out.append(f"<p>{esc(op.get('description', ''))}</p>")
            parameters = op.get("parameters", [])
            if parameters:
                out.append("<h3>Query parameters</h3>" + _fields({
                    "properties": {q["name"]: {**q.get("schema", {}),
                                               "description": q.get("description", "")}
                                   for q in parameters},
                    "required": [q["name"] for q in parameters if q.get("required")]},
                    components))
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                out.append("<h3>Request body</h3>" + _fields(body["schema"], components))
            for code, answer in op.get("responses", {}).items():
                content = answer.get("content", {})
                kind = ", ".join(content) or "no body"
                out.append(f"<h3>{esc(code)}: {esc(answer.get('description', ''))} "
                           f"({esc(kind)})</h3>")
                json_schema = content.get("application/json", {}).get("schema")
                if json_schema and code.startswith("2"):
                    out.append(_fields(json_schema, components))
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:0 auto;padding:16px;"
             "color:#222}code{background:#f3f3f3;padding:1px 4px}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;"
             "vertical-align:top}h2{margin-top:2em;border-bottom:1px solid #ddd}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(info.get('title', 'API'))}: API</title><style>{style}</style></head>"
            f"<body>{''.join(out)}</body></html>\n")


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return components.get(ref.rsplit("/", 1)[-1], {}) if ref else schema


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "minimum" in schema and "maximum" in schema:
        return f"{schema.get('type', 'number')} ({schema['minimum']} to {schema['maximum']})"
    return str(schema.get("type", "any"))


def _fields(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> str:
    esc = html.escape
    schema = _resolve(schema, components)
    props = schema.get("properties", {})
    if not props:
        return f"<p><code>{esc(_type(schema))}</code></p>"
    required = set(schema.get("required", []))
    rows = []
    for name, prop in props.items():
        default = f" (default {json.dumps(prop['default'])})" if "default" in prop else ""
        rows.append(f"<tr><td><code>{esc(name)}</code>{'' if name in required else '?'}</td>"
                    f"<td>{esc(_type(prop))}</td>"
                    f"<td>{esc(prop.get('description', ''))}{esc(default)}</td></tr>")
        nested = prop.get("$ref")
        if nested and depth < 1:
            rows.append(f"<tr><td></td><td colspan=2>{_fields(prop, components, depth + 1)}"
                        "</td></tr>")
    return ("<table><tr><th>field</th><th>type</th><th>meaning</th></tr>"
            + "".join(rows) + "</table>")
