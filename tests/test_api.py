"""The public API: every name the README documents is importable where it says, and stays there.

The package is split into rooms (``core``, ``keys``, ``index``, ``gallery``, ``io``, ``jobs``,
``metrics``, …); this test pins what each room exports, so moving code inside a room cannot quietly
remove a public name, and the short attribute names of the flat package (``pf.synth``,
``pf.geometry``, ``pf.scoring``) keep working.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import pyfacematch as pf

PUBLIC = {
    "pyfacematch": [
        "Candidate",
        "Decision",
        "Gallery",
        "IdentifyArrays",
        "IdentifyResult",
        "KeyModel",
        "PyFaceMatchError",
        "VerifyResult",
        "as_templates",
        "cosine",
        "errors",
        "get_num_threads",
        "hamming_topk",
        "hamming_topk2",
        "masked_cosine",
        "masked_scores",
        "masked_topk",
        "normalize",
        "pack_signs",
        "rerank",
        "scores",
        "set_num_threads",
        "simd",
        "topk",
    ],
    "pyfacematch.errors": [
        "DTypeError",
        "DimensionError",
        "DuplicateIdentityError",
        "EmptyInputError",
        "FormatVersionError",
        "GalleryFileError",
        "IndexTrainingError",
        "InputError",
        "LandmarkError",
        "ModelError",
        "NonFiniteError",
        "PyFaceMatchError",
        "SchemeError",
        "UnknownIdentityError",
        "ZeroVectorError",
    ],
    "pyfacematch.core.scoring": [
        "DEFAULT_MIN_FRACTION",
        "as_templates",
        "cosine",
        "get_num_threads",
        "hamming_topk",
        "hamming_topk2",
        "masked_cosine",
        "masked_scores",
        "masked_topk",
        "normalize",
        "pack_signs",
        "rerank",
        "scores",
        "set_num_threads",
        "topk",
    ],
    "pyfacematch.core.simd": [
        "active",
        "available",
        "compiled",
        "cpu_features",
        "info",
        "set_bf16_prefilter",
        "set_level",
    ],
    "pyfacematch.keys": ["KeyModel"],
    "pyfacematch.keys.geometry": [
        "FeatureLayout",
        "STATUS",
        "align",
        "align_reference",
        "check_landmarks",
        "features",
        "features_reference",
    ],
    "pyfacematch.keys.schemes": [
        "Scheme",
        "default_distance_pairs",
        "get_scheme",
        "list_schemes",
        "load_scheme",
        "register_scheme",
    ],
    "pyfacematch.keys.synth": ["FaceSynthesizer", "OCCLUDERS", "SynthFaces", "synthesize"],
    "pyfacematch.index": [
        "BACKENDS",
        "Backend",
        "BinaryBackend",
        "DEFAULT_BACKEND",
        "ExactBackend",
        "FaissBackend",
        "TemplateMatrix",
        "make_backend",
    ],
    "pyfacematch.gallery": [
        "Candidate",
        "Decision",
        "Gallery",
        "IdentifyArrays",
        "IdentifyResult",
        "VerifyResult",
    ],
    "pyfacematch.io": [
        "Chunk",
        "INPUT_FORMATS",
        "OUTPUT_FORMATS",
        "RecordReader",
        "Reject",
        "ResultColumns",
        "concat_parts",
        "detect_format",
        "result_part_suffix",
        "write_rejects",
        "write_results_part",
        "write_table",
    ],
    "pyfacematch.jobs": ["JobSpec", "Progress", "prefetch", "result_columns", "run_job"],
    "pyfacematch.metrics": [
        "CMCCurve",
        "DEFAULT_FMR_TARGETS",
        "DEFAULT_FPIR_TARGETS",
        "EERResult",
        "ErrorCurve",
        "FailureRate",
        "GeneralizedRates",
        "IdentificationPoint",
        "Interval",
        "OperatingPoint",
        "binomial_ci",
        "cmc",
        "det_curve",
        "eer",
        "error_rates",
        "failure_rate",
        "fnir_at_fpir",
        "fnmr_at_fmr",
        "fpir_fnir",
        "generalized_rates",
        "identification_det_curve",
        "min_comparisons_for",
        "rank_miss_rate",
        "threshold_for_fmr",
        "threshold_for_fpir",
    ],
    "pyfacematch.plots": [
        "cmc_figure",
        "det_figure",
        "plot_cmc",
        "plot_det",
        "plot_score_histograms",
        "plot_throughput",
        "save_figure",
        "score_histogram_figure",
        "throughput_figure",
    ],
    "pyfacematch.embed": [
        "Detector",
        "EmbedBatch",
        "Embedder",
        "FAILURE_REASONS",
        "Face",
        "ImageLoadError",
        "ImageResult",
        "POLICIES",
        "StageTimings",
        "create_embedder",
        "face_quality",
        "list_images",
        "load_image",
    ],
    "pyfacematch.fusion": ["ScoreFusion", "cross_validated_fusion", "pair_scores"],
    "pyfacematch.gallery.calibration": ["calibrate_threshold", "pair_scores"],
    "pyfacematch.gallery.store": [
        "CheckpointRecord",
        "FORMAT_NAME",
        "FORMAT_VERSION",
        "Store",
        "ThresholdRecord",
        "digest_tids",
    ],
}

# Attribute names on the top-level package (lazy: loaded on first use) and the module each gives.
ATTR_MODULES = {
    "calibration": "pyfacematch.gallery.calibration",
    "embed": "pyfacematch.embed",
    "fusion": "pyfacematch.fusion",
    "gallery": "pyfacematch.gallery",
    "geometry": "pyfacematch.keys.geometry",
    "index": "pyfacematch.index",
    "io": "pyfacematch.io",
    "jobs": "pyfacematch.jobs",
    "keys": "pyfacematch.keys",
    "metrics": "pyfacematch.metrics",
    "plots": "pyfacematch.plots",
    "schemes": "pyfacematch.keys.schemes",
    "scoring": "pyfacematch.core.scoring",
    "simd": "pyfacematch.core.simd",
    "synth": "pyfacematch.keys.synth",
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_is_exported(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in PUBLIC[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost public names {missing}"
    assert set(PUBLIC[module]) <= set(mod.__all__), set(PUBLIC[module]) - set(mod.__all__)


@pytest.mark.parametrize("name", sorted(ATTR_MODULES))
def test_short_module_names_on_the_package(name: str) -> None:
    assert getattr(pf, name) is importlib.import_module(ATTR_MODULES[name])
    assert name in dir(pf)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pf.nope  # noqa: B018


def test_readme_imports() -> None:
    from pyfacematch import synth  # the README's quickstart form

    assert synth.FaceSynthesizer is pf.keys.synth.FaceSynthesizer
    assert pf.Gallery is pf.gallery.Gallery and pf.KeyModel is pf.keys.KeyModel


def test_version_is_the_distribution_version() -> None:
    from importlib.metadata import version

    assert pf.__version__ == version("pyfacematch")


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyfacematch", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"pyfacematch {pf.__version__}"


def test_source_tree_without_core_says_what_to_run(tmp_path) -> None:
    """A copy of the package without its compiled core fails with one plain sentence."""
    import shutil
    from pathlib import Path

    src = Path(pf.__file__).parent
    dst = tmp_path / "pyfacematch"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_core*", "__pycache__"))
    out = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import pyfacematch",
        ],  # -S: no site-packages, so no installed copy,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode != 0
    assert "compiled core (_core) is missing" in out.stderr
    assert "pip install ." in out.stderr
