"""Store layout for bulk galleries: new files use 16 KiB SQLite pages, so 512-d float32 rows are
not one per 4 KiB page (4.1 KB per template on disk before)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

import pyfacematch as pf
from pyfacematch.gallery.store import PAGE_SIZE, page_size_for


def test_new_gallery_files_use_large_pages_and_about_2_7_kb_per_template(tmp_path: Path) -> None:
    n, d = 2000, 512
    x = pf.normalize(np.random.default_rng(0).standard_normal((n, d)).astype(np.float32))
    with pf.Gallery(d, path=tmp_path / "g.db") as g:
        g.enroll_many([f"p{i}" for i in range(n)], x)
        g.remove("p7")
    con = sqlite3.connect(tmp_path / "g.db")
    assert con.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 16384
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert page_size_for(256) == 4096 and page_size_for(257) == 16384  # small rows: 4 KiB
    size = (tmp_path / "g.db").stat().st_size
    assert size / n < 3000, size / n  # templates, identities, indexes, audit, consent
    with pf.Gallery(path=tmp_path / "g.db", read_only=True) as g:  # reopened and searched
        assert len(g) == n - 1 and g.identify_arrays(x[:3], k=1).identities[:, 0].tolist() == [
            "p0",
            "p1",
            "p2",
        ]
