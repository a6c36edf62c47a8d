"""From cohort to pixels: a routed DICOMweb client, slides in wsidicom, thumbnails and contact sheets.

    >>> from cohort import Cohort
    >>> from cohort.pixels import RoutedClient, contact_sheet, open_slide
    >>> slides = Cohort.from_query("sm_by_organ", organ="Pancreas")
    >>> client = RoutedClient.for_cohort(slides)           # each series to its endpoint
    >>> slide = open_slide(client, slides.series_uids[0])  # wsidicom.WsiDicom (pip install 'idc-cohort[wsi]')
    >>> contact_sheet(slides, client).to_html("sheet.html")

Modules: ``client`` (:class:`RoutedClient`), ``slides`` (:func:`open_slide`), ``thumbnails``
(fetch and cache), ``sheet`` (:class:`ContactSheet`: PNG and HTML).
"""

from .client import RoutedClient, SeriesRoute, routes_from_reports
from .sheet import ContactSheet, contact_sheet, write_sheet
from .slides import open_slide
from .thumbnails import Thumbnail, fetch_thumbnails

__all__ = ["ContactSheet", "RoutedClient", "SeriesRoute", "Thumbnail", "contact_sheet", "fetch_thumbnails",
           "open_slide", "routes_from_reports", "write_sheet"]
