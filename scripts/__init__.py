"""Developer scripts (``make bench``, ``make eval-drift``); importable so that tests can drive them."""
