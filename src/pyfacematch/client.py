"""A Python client of ``pyfacematch serve`` with the method names of :class:`Gallery`.

Switching between in-process and remote use is one line::

    g = Gallery.open("shop.db")                                   # in-process
    g = Client("http://127.0.0.1:8000", "shop", api_key=token)    # remote

Both return the same result types (:class:`IdentifyResult`, :class:`VerifyResult`) and raise the
same typed errors: a problem answer (RFC 9457) is turned back into the library error of its type
(``DimensionError``, ``UnknownIdentityError`` …), else :class:`ServiceError`.
"""

from __future__ import annotations

import io
import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pyfacematch import errors as E
from pyfacematch.gallery.results import Candidate, Decision, IdentifyResult, VerifyResult
from pyfacematch.security.consent import ConsentRecord

__all__ = ["Client", "ServiceError", "npy_bytes"]

_PREFIX = "urn:pyfacematch:problem:"


class ServiceError(E.PyFaceMatchError, OSError):
    """The service answered an error that has no library counterpart (auth, rate limit, fault).

    Attributes
    ----------
    status : int
    problem : dict
        The RFC 9457 body (``type``, ``title``, ``detail`` …).
    retry_after : float or None
        Seconds to wait, from ``Retry-After`` (429).
    """

    def __init__(self, status: int, problem: Mapping[str, Any], retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {problem.get('title')}: {problem.get('detail')}")
        self.status = status
        self.problem = dict(problem)
        self.retry_after = retry_after


_TYPES: dict[str, type[Exception]] = {
    "dimension": E.DimensionError,
    "non-finite": E.NonFiniteError,
    "zero-vector": E.ZeroVectorError,
    "empty": E.EmptyInputError,
    "duplicate-identity": E.DuplicateIdentityError,
    "index-training": E.IndexTrainingError,
    "invalid-input": E.InputError,
    "dtype": E.DTypeError,
    "no-consent": E.NoConsentError,
    "consent": E.ConsentError,
    "unknown-identity": E.UnknownIdentityError,
    "read-only": E.GalleryReadOnlyError,
}


def _record(d: Mapping[str, Any]) -> ConsentRecord:
    return ConsentRecord(
        str(d["identity"]),
        str(d["purpose"]),
        float(d["granted_at"]),
        str(d["source"]),
        None if d.get("expires_at") is None else float(d["expires_at"]),
    )


def _decision(d: Mapping[str, Any]) -> Decision:
    return Decision(d["accepted"], d["threshold"], d["source"], d["target"])


def _score(x: Any) -> float:
    return float("nan") if x is None else float(x)


class Client:
    """A remote gallery.

    Parameters
    ----------
    base_url : str
        ``http(s)://host:port`` of the service.
    gallery : str
        The served gallery's name.
    api_key : str or None
        Sent as ``Authorization: Bearer``.
    binary : bool
        Send templates as ``application/octet-stream`` float32 rows (default) or JSON.
    timeout : float
        Seconds per request.
    verify_tls : bool, str or ssl.SSLContext
        Check the service's certificate (True, default), not (False), or against this CA
        bundle file (a self-signed service certificate) or SSL context.
    """

    def __init__(
        self,
        base_url: str,
        gallery: str,
        *,
        api_key: str | None = None,
        binary: bool = True,
        timeout: float = 30.0,
        verify_tls: bool | str | ssl.SSLContext = True,
    ) -> None:
        import httpx

        if isinstance(verify_tls, str):
            verify_tls = ssl.create_default_context(cafile=verify_tls)
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self.gallery = gallery
        self.binary = bool(binary)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, verify=verify_tls
        )
        self._dim: int | None = None

    # ------------------------------------------------------------------ plumbing
    def _url(self, tail: str) -> str:
        return f"/v1/galleries/{self.gallery}/{tail}"

    def _check(self, r: Any) -> Any:
        if r.status_code < 400:
            return r.json()
        try:
            prob = r.json()
        except ValueError:
            prob = {"title": "HTTP error", "detail": r.text[:200]}
        slug = str(prob.get("type", "")).removeprefix(_PREFIX)
        cls = _TYPES.get(slug)
        if cls is not None:
            raise cls(str(prob.get("detail", "")))
        ra = r.headers.get("retry-after")
        raise ServiceError(r.status_code, prob, None if ra is None else float(ra))

    def _rows(self, x: Any) -> np.ndarray:
        a = np.asarray(x, dtype=np.float32)
        return a.reshape(1, -1) if a.ndim == 1 else a

    def _post(self, tail: str, field: str, rows: np.ndarray, params: dict[str, Any]) -> Any:
        params = {k: v for k, v in params.items() if v is not None}
        if self.binary:
            body = np.ascontiguousarray(rows, dtype="<f4").tobytes()
            params["dim"] = rows.shape[1]  # lets the service name a wrong width (422)
            r = self._http.post(
                self._url(tail),
                content=body,
                params=params,
                headers={"Content-Type": "application/octet-stream"},
            )
        else:
            r = self._http.post(self._url(tail), json={field: rows.tolist(), **params})
        return self._check(r)

    # ------------------------------------------------------------------ Gallery API
    def identify(
        self,
        probes: Any,
        k: int = 1,
        threshold: float | None = None,
        *,
        purpose: str | None = None,
    ) -> list[IdentifyResult]:
        """Identify probes (1:N); see :meth:`Gallery.identify` (the actor is the API key)."""
        d = self._post(
            "identify",
            "probes",
            self._rows(probes),
            {"k": k, "threshold": threshold, "purpose": purpose},
        )
        return [
            IdentifyResult(
                tuple(Candidate(c["identity"], _score(c["score"])) for c in r["candidates"]),
                _decision(r["decision"]),
            )
            for r in d["results"]
        ]

    def verify(
        self,
        identity_id: str,
        probe: Any,
        threshold: float | None = None,
        *,
        purpose: str | None = None,
    ) -> VerifyResult:
        """Compare a probe with one identity (1:1); see :meth:`Gallery.verify`."""
        d = self._post(
            "verify",
            "probe",
            self._rows(probe),
            {"identity": identity_id, "threshold": threshold, "purpose": purpose},
        )
        return VerifyResult(d["identity"], _score(d["score"]), _decision(d["decision"]))

    def enroll(
        self,
        identity_id: str,
        templates: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        on_duplicate: str | None = None,
        purpose: str | None = None,
    ) -> None:
        """Enroll an identity; see :meth:`Gallery.enroll` (metadata forces a JSON body)."""
        rows = self._rows(templates)
        params = {"identity": identity_id, "on_duplicate": on_duplicate, "purpose": purpose}
        params = {k: v for k, v in params.items() if v is not None}
        if metadata is not None:
            r = self._http.post(
                self._url("enroll"),
                json={"templates": rows.tolist(), "metadata": dict(metadata), **params},
            )
            self._check(r)
        else:
            self._post("enroll", "templates", rows, params)

    # ------------------------------------------------------------------ photos
    def _photos(self, tail: str, images: Any, fields: dict[str, Any]) -> Any:
        """POST photos as multipart ``image`` parts (paths or bytes) with form fields."""
        if isinstance(images, (str, os.PathLike, bytes)):
            images = [images]
        files = []
        for i, im in enumerate(images):
            data = im if isinstance(im, bytes) else Path(im).read_bytes()
            files.append(("image", (f"photo{i}", data, "application/octet-stream")))
        data_fields = {k: str(v) for k, v in fields.items() if v is not None}
        return self._check(self._http.post(self._url(tail), data=data_fields, files=files))

    def identify_photos(
        self,
        images: Any,
        k: int = 1,
        threshold: float | None = None,
        *,
        purpose: str | None = None,
        faces: str = "single",
    ) -> list[IdentifyResult]:
        """Identify the face of each photo (paths or bytes) on a server with an embedder.

        ``faces="largest"`` keeps the largest of several faces (default: refused, 422).
        Raises :class:`ServiceError` for photos that give no template (415 not an image,
        413 too large, 422 no face / several faces / unreadable).
        """
        d = self._photos(
            "identify",
            images,
            {"k": k, "threshold": threshold, "purpose": purpose, "faces": faces},
        )
        return [
            IdentifyResult(
                tuple(Candidate(c["identity"], _score(c["score"])) for c in r["candidates"]),
                _decision(r["decision"]),
            )
            for r in d["results"]
        ]

    def verify_photo(
        self,
        identity_id: str,
        image: Any,
        threshold: float | None = None,
        *,
        purpose: str | None = None,
        faces: str = "single",
    ) -> VerifyResult:
        """Compare the face of a photo with one identity (1:1)."""
        d = self._photos(
            "verify",
            [image],
            {"identity": identity_id, "threshold": threshold, "purpose": purpose, "faces": faces},
        )
        return VerifyResult(d["identity"], _score(d["score"]), _decision(d["decision"]))

    def enroll_photos(
        self,
        identity_id: str,
        images: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        on_duplicate: str | None = None,
        purpose: str | None = None,
        faces: str = "single",
    ) -> None:
        """Enroll an identity from photos (one template per photo)."""
        self._photos(
            "enroll",
            images,
            {
                "identity": identity_id,
                "metadata": None if metadata is None else json.dumps(dict(metadata)),
                "on_duplicate": on_duplicate,
                "purpose": purpose,
                "faces": faces,
            },
        )

    def remove(self, identity_id: str) -> None:
        """Opt-out: erase an identity; see :meth:`Gallery.remove`."""
        self._check(self._http.delete(self._url(f"identities/{identity_id}")))

    def grant_consent(
        self, identity_id: str, purpose: str, *, source: str, expires_at: float | None = None
    ) -> ConsentRecord:
        """Record consent for a purpose (``enroll`` scope); see :meth:`Gallery.grant_consent`."""
        d = self._check(
            self._http.post(
                self._url(f"identities/{identity_id}/consent"),
                json={"purpose": purpose, "source": source, "expires_at": expires_at},
            )
        )
        return _record(d)

    def withdraw_consent(self, identity_id: str, purpose: str | None = None) -> list[str]:
        """Withdraw consent (``remove`` scope); every purpose: opt-out. Purposes left."""
        params = {} if purpose is None else {"purpose": purpose}
        d = self._check(
            self._http.delete(self._url(f"identities/{identity_id}/consent"), params=params)
        )
        return [str(p) for p in d["remaining"]]

    def consent_records(self, identity_id: str) -> list[ConsentRecord]:
        """Consent records of an identity (``verify`` or ``admin`` scope)."""
        d = self._check(self._http.get(self._url(f"identities/{identity_id}/consent")))
        return [_record(r) for r in d["records"]]

    def info(self) -> dict[str, Any]:
        """The served gallery's size, backend, dimension and thresholds."""
        d: dict[str, Any] = self._check(self._http.get(self._url("info")))
        return d

    def calibrate(self, **body: Any) -> dict[str, Any]:
        """Calibrate a threshold (admin); keyword arguments as in :meth:`Gallery.calibrate`."""
        js = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in body.items()}
        d: dict[str, Any] = self._check(self._http.post(self._url("calibrate"), json=js))
        return d

    def __len__(self) -> int:
        return int(self.info()["identities"])

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def npy_bytes(a: Any) -> bytes:
    """``a`` as the bytes of a ``.npy`` file (for ``application/x-npy`` bodies)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(a, np.float32), allow_pickle=False)
    return buf.getvalue()
