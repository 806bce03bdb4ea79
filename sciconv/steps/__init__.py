"""One module per pipeline step; each exposes `run(ds: DatasetConfig, **options)`.

Steps read only the files the previous steps wrote (paths in `paths.py`) and
never reach into one another.
"""
