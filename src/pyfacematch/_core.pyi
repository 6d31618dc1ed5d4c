# Type stub of the private extension module (cpp/bindings). Use the pyfacematch package instead.
# Checked against the built module by tests/test_core_stub.py (mypy's stubtest).
from typing import Callable, TypeAlias

import numpy as np
import numpy.typing as npt

_F32: TypeAlias = npt.NDArray[np.float32]
_I32: TypeAlias = npt.NDArray[np.int32]
_I64: TypeAlias = npt.NDArray[np.int64]
_U64: TypeAlias = npt.NDArray[np.uint64]
_U8: TypeAlias = npt.NDArray[np.uint8]

def cosine(a: object, b: object, /) -> float: ...
def cosine_checked(a: _F32, b: _F32) -> float: ...
def _set_cosine_fallback(fn: Callable[[object, object], float]) -> None: ...
def first_nonfinite_row(x: _F32) -> int: ...
def scores(probes: _F32, gallery: _F32) -> tuple[_F32, bool]: ...
def topk(probes: _F32, gallery: _F32, k: int) -> tuple[_F32, _I64, bool]: ...
def masked_cosine(
    a: _F32, b: _F32, mask_a: int, mask_b: int, blocks: _I64, min_fraction: float
) -> float: ...
def masked_scores(
    probes: _F32,
    probe_masks: _U64,
    gallery: _F32,
    gallery_masks: _U64,
    blocks: _I64,
    min_fraction: float,
) -> _F32: ...
def masked_topk(
    probes: _F32,
    probe_masks: _U64,
    gallery: _F32,
    gallery_masks: _U64,
    blocks: _I64,
    min_fraction: float,
    k: int,
) -> tuple[_F32, _I64]: ...
def rerank(
    probes: _F32,
    gallery: _F32,
    candidates: _I64,
    k: int,
    probe_masks: _U64 | None,
    gallery_masks: _U64 | None,
    blocks: _I64 | None,
    min_fraction: float,
) -> tuple[_F32, _I64]: ...
def pack_signs(templates: _F32, center: _F32 | None) -> _U8: ...
def hamming_topk(probe_codes: _U8, gallery_codes: _U8, k: int) -> tuple[_I32, _I64]: ...
def hamming_topk2(
    probe_first: _U8, probe_rest: _U8, gallery_first: _U8, gallery_rest: _U8, k: int, scan: int
) -> tuple[_I32, _I64]: ...
def simd_compiled() -> list[str]: ...
def simd_available() -> list[str]: ...
def simd_active() -> str: ...
def simd_set(level: str) -> None: ...
def cpu_vendor() -> str: ...
def cpu_family_model() -> tuple[int, int]: ...
def stream_prefetch() -> str: ...
def cpu_features() -> list[str]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def max_num_threads() -> int: ...
def set_bf16_prefilter(on: bool) -> None: ...
def bf16_prefilter_active() -> bool: ...
def stream_read(x: _F32) -> float: ...
def geometry_align(
    landmarks: _F32, visibility: object, mean: _F32, weights: object, min_visible: int
) -> tuple[_F32, _F32, _F32, _I32]: ...
def geometry_features(
    landmarks: _F32,
    visibility: object,
    mean: _F32,
    weights: object,
    min_visible: int,
    kind: _I32,
    p: _I32,
    q: _I32,
    fill: _F32,
    feat_offsets: _I64,
    point_block: _I32,
    block_min_visible: _I32,
) -> tuple[_F32, _U64, _I32]: ...
def geometry_encode(
    landmarks: _F32,
    visibility: object,
    mean: _F32,
    weights: object,
    min_visible: int,
    kind: _I32,
    p: _I32,
    q: _I32,
    fill: _F32,
    feat_offsets: _I64,
    point_block: _I32,
    block_min_visible: _I32,
    mu: _F32,
    W: _F32,
    w_offsets: _I64,
    key_offsets: _I64,
) -> tuple[_F32, _U64, _I32, _F32]: ...
