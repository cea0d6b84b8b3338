"""``make report``: one self-contained HTML page of the warehouse's KPIs and the runs'
summaries (:mod:`reporting.sources` reads them, :mod:`reporting.page` renders them)."""
