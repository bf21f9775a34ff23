"""MedVec core library: models, data vectors, merging, data, training and metrics.

No web, database or queue code lives here; the registry (``app``), the workers
(``worker``) and the hospital CLI (``hospital_cli``) build on it.
"""

__version__ = "0.1.0"
