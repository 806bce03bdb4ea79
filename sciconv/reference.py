"""docs/configuration.md, generated from the JSON schemas, so the reference cannot drift from them.

    python -m sciconv.reference docs/configuration.md       # rewrite it
    python -m sciconv.reference --check docs/configuration.md   # exit 1 when it is stale (a test runs this)

One table per section: the global config, the shared dataset keys, then each domain's own
sections (source, preprocess, augment, baseline), with types, defaults and descriptions as the
schemas state them, and what each step reads (sciconv.settings), which is what reruns it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sciconv.config import DOMAIN_SECTIONS, load_schema
from sciconv.domains import available_domains, get_domain
from sciconv.settings import DATASET_READS, GLOBAL_READS

HEADER = """# Configuration reference

Generated from `workflow/schemas/*.schema.yaml` and each domain's `SCHEMAS` by
`python -m sciconv.reference docs/configuration.md`; `tests/test_reference.py` fails when this file
is stale. Every key left out takes the default shown. A key's dotted path is what `--set` takes:
`sciconv train D --set train.epochs=3`.
"""


def _type(schema: dict) -> str:
    if "enum" in schema:
        return ", ".join("null" if v is None else f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "object" if "properties" in schema else "")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array" and isinstance(schema.get("items"), dict) and schema["items"].get("type"):
        return f"array of {_type(schema['items'])}"
    return kind or ("one of several forms" if "oneOf" in schema or "anyOf" in schema else "")


def _default(schema: dict) -> str:
    if "default" not in schema:
        return ""
    return f"`{json.dumps(schema['default'])}`"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def rows(schema: dict, prefix: str = "") -> list[str]:
    """One table row per leaf key (objects with properties are expanded under dotted paths)."""
    out = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub:
            if sub.get("description"):
                out.append(f"| `{path}` | object |  | {_cell(sub['description'])} |")
            out += rows(sub, path + ".")
        else:
            out.append(f"| `{path}` | {_cell(_type(sub))} | {_cell(_default(sub))} | {_cell(sub.get('description', ''))} |")
    return out


def table(title: str, schema: dict, prefix: str = "") -> list[str]:
    body = rows(schema, prefix)
    return [f"## {title}", "", "| key | type | default | description |", "|---|---|---|---|", *body, ""]


def reruns() -> list[str]:
    lines = ["## What each step reads (and so what reruns it)", "",
             "| step | dataset keys | global keys |", "|---|---|---|"]
    for step, keys in DATASET_READS.items():
        lines.append(f"| {step} | {', '.join(f'`{k}`' for k in keys)} | "
                     f"{', '.join(f'`{k}`' for k in GLOBAL_READS.get(step, ())) or '-'} |")
    lines += ["", "A classifier's evaluate also reads `explain.method`, `explain.pointing_tolerance_px` and "
              "`explain.target_layer` (its pointing game).", ""]
    return lines


def render() -> str:
    lines = [HEADER, *table("Global: config/config.yaml", load_schema("config"))]
    shared = load_schema("dataset")
    common = {"properties": {k: v for k, v in shared["properties"].items() if k not in DOMAIN_SECTIONS}}
    lines += table("Dataset: config/datasets/<name>.yaml, shared keys", common)
    lines += table("Dataset: source for your own files (`source.kind: files`)", shared["$defs"]["files_source"],
                   "source.")
    for name in available_domains():
        domain = get_domain(name)
        for section in DOMAIN_SECTIONS:
            if section == "source" and not domain.can_simulate:
                continue  # its own files only: the shared files source above
            lines += table(f"Domain `{name}`: {section}" + (" (`kind: simulate`)" if section == "source" else ""),
                           domain.schemas[section], f"{section}.")
    lines += reruns()
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 when stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.path.is_file() or args.path.read_text() != text:
            print(f"{args.path} is stale: run python -m sciconv.reference {args.path}", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
