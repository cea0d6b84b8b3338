"""Run the synthesized pipeline on this machine: moto's AWS, an embedded PostgreSQL.

The Lambda code (``lambdas/``) is importable as it is in a Lambda: as top-level packages
(``kpi_pipeline``, ``transform``...), whoever starts the local runner.
"""

from __future__ import annotations

import sys
from pathlib import Path

LAMBDAS = Path(__file__).resolve().parent.parent / "lambdas"
if str(LAMBDAS) not in sys.path:
    sys.path.insert(0, str(LAMBDAS))
