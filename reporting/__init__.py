"""``make report``: one self-contained HTML page of the warehouse's KPIs and the runs'
summaries (:mod:`reporting.sources` reads them, :mod:`reporting.page` renders them).

It reads the warehouse schema from the Lambda code, importable the way the local runner
makes it (``local_runner`` puts ``lambdas/`` on the path).
"""

import local_runner  # noqa: F401  (the Lambda code's packages, as top-level packages)
