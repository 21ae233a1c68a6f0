"""Prefect flows chaining the DVC stages through the dvc CLI (never stage code).

``pipeline`` (one task per stage), ``retrain`` (scheduled retraining with a champion),
``sweep`` (the paper's grids as parallel DVC experiments), ``serve`` (a scheduled server
process); ``grids`` holds the grids as plain data. See docs/prefect.md.
"""
