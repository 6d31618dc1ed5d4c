"""Bulk jobs: streaming, resumable enroll / identify / verify over files, and the demo.

``jobs.runner`` runs a job in chunks with a manifest, part files and resume; beside it the job
bodies that turn records into gallery calls: ``encode`` (records → templates: readers, landmarks
→ keys, images → embeddings), ``enroll``, ``identify``, ``verify``, ``remove``, ``calibrate``,
``export`` (and ``info``), ``demo``; ``common`` what they share. Each job is a typed function that
returns a JSON-ready summary or raises a typed error, so the command line only parses and prints.
"""

from __future__ import annotations

from pyfacematch.jobs.calibrate import calibrate_gallery, impostor_pairs, read_scores
from pyfacematch.jobs.common import JobOutput, gallery_fingerprint, job_fingerprint, open_gallery
from pyfacematch.jobs.encode import Source, encode_chunk, open_reader, templates_of
from pyfacematch.jobs.enroll import enroll_records, refuse_duplicates
from pyfacematch.jobs.export import export_templates, gallery_info
from pyfacematch.jobs.identify import identify_chunk, identify_job, identify_rows
from pyfacematch.jobs.remove import read_ids, remove_identities
from pyfacematch.jobs.runner import JobSpec, Progress, prefetch, result_columns, run_job
from pyfacematch.jobs.verify import verify_chunk, verify_job

__all__ = [
    "JobOutput",
    "JobSpec",
    "Progress",
    "Source",
    "calibrate_gallery",
    "encode_chunk",
    "enroll_records",
    "export_templates",
    "gallery_fingerprint",
    "gallery_info",
    "identify_chunk",
    "identify_job",
    "identify_rows",
    "impostor_pairs",
    "job_fingerprint",
    "open_gallery",
    "open_reader",
    "prefetch",
    "read_ids",
    "read_scores",
    "refuse_duplicates",
    "remove_identities",
    "result_columns",
    "run_job",
    "templates_of",
    "verify_chunk",
    "verify_job",
]
