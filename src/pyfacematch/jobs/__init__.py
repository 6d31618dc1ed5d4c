"""Bulk jobs: streaming, resumable enroll / identify / verify over files, and the demo.

``jobs.runner`` runs a job in chunks with a manifest, part files and resume; the job bodies that
turn records into gallery calls live beside it, so the command line only parses and prints.
"""

from __future__ import annotations

from pyfacematch.jobs.runner import JobSpec, Progress, prefetch, result_columns, run_job

__all__ = ["JobSpec", "Progress", "prefetch", "result_columns", "run_job"]
