"""Landmarks to templates: schemes, geometry, the key model and synthetic faces.

``keys.schemes`` holds named landmark layouts as data; ``keys.geometry`` aligns landmarks to a
scheme's mean shape and measures per-region features (batched in C++); ``keys.model`` turns those
features into unit-norm templates with a validity mask per region block (:class:`KeyModel`);
``keys.synth`` generates synthetic faces with identities, expressions, poses and occluders.
"""

from __future__ import annotations

from pyfacematch.keys.model import KeyModel

__all__ = ["KeyModel"]
