"""IDC releases: which one the index is, and which Google store is assumed to be the newest.

One setting, used everywhere: :func:`default_newest_store` is the newest Google
store that :func:`cohort.coverage.route` assumes when none is given or
discovered, and the default of the saved query ``not_in_google_store``
(``-- param newest_store INTEGER = @newest_google_store``), so both count the
same series.
"""

from __future__ import annotations

from .errors import CoverageError
from .tables import idc_version

#: Releases between the index and the newest Google store assumed when none is given
#: (a store appears 1-2 weeks after its release).
DEFAULT_LAG = 1


def default_newest_store(current: int | None = None, lag: int = DEFAULT_LAG) -> int:
    """The newest Google store assumed: the index's release (``current``, default the installed one) minus ``lag``."""
    if lag < 0:
        raise CoverageError(f"lag must be 0 or more releases, got {lag}")
    return (idc_version() if current is None else current) - lag
