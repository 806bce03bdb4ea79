"""sources: what sciconv sees in a folder, an archive, a manifest or a dataset's source, before
anything is read into a store (`sciconv sources PATH`). It lists files and reads headers only."""

from __future__ import annotations

from pathlib import Path

from sciconv import sources


def run(target: str, config_path: str, layout: str | None = None, channels: str | None = None) -> None:
    path = Path(target)
    if target.endswith((".yaml", ".yml")) or not path.exists():
        # a dataset: its own source settings, and its classes
        from sciconv.config import load_dataset, load_global

        ds = load_dataset(target, load_global(config_path))
        if ds.cfg["source"]["kind"] != "files":
            print(f"{ds.name}: source.kind simulate; `sciconv simulate {ds.name}` writes its files")
            return
        lines = sources.describe(ds.cfg["source"], ds.path.resolve().parent, ds.class_names, str(ds.path))
        print("\n".join([f"dataset: {ds.name} ({ds.path})"] + lines))
        return
    from sciconv.config import load_schema, schema_defaults

    # the schema's defaults (pattern, images, masks, channel_pattern) under what was detected or given
    src = schema_defaults(load_schema("dataset")["$defs"]["files_source"]) | sources.detect_layout(path)
    if layout:
        src |= {"layout": layout, "path": str(path), "manifest": str(path)}
    if channels:
        src["channels"] = [c.strip() for c in channels.split(",") if c.strip()]
    print("\n".join([f"path: {path.resolve()}"] + sources.describe(src, Path.cwd(), None, str(path))))
