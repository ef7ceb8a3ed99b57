"""JSON that is JSON: ``NaN``/``inf`` become ``null`` and numpy scalars Python numbers.

``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (``jq``, JavaScript's
``JSON.parse``, ``json.loads(..., parse_constant=...)`` users) reject. Every JSON this package prints
or writes for people goes through :func:`json_safe` (``halsr-hf ef --json``, ``summary.json`` of
``halsr-hf evaluate``).
"""

from __future__ import annotations

import json
import math

import numpy as np


def json_safe(value):
    """A copy of ``value`` (dicts, lists, tuples, scalars) that ``json.dumps(..., allow_nan=False)``
    accepts: non-finite floats -> ``None``, numpy scalars and arrays -> Python numbers and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps(json_safe(value), allow_nan=False, **kwargs)``."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
