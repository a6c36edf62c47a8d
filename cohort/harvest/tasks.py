"""What a harvest asks for: the series of a source (:func:`series_tasks`), how they are grouped into
requests (:func:`fetch_units`), and what a run did (:class:`HarvestResult`).

A series is asked for on its own (``GET {series}/metadata``), or with the other series of its study in
one request (``GET {study}/metadata``, PS3.18 10.4.1) when the harvest wants every series of the study:
one round trip instead of one a series. IDC's studies have 6 series on average (5 at the median), so
through a proxy with a 100 ms round trip this is most of a harvest's time. Whether a study is wanted
whole is known from the index for a :class:`~cohort.Cohort` (:func:`whole_studies`); for any other
source the caller says so (``by_study=True``). Instances of series not wanted are dropped from the
answer, and a wanted series missing from it is asked for on its own (see :mod:`.runner`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Union

import pyarrow as pa

from ..coverage import route
from ..endpoints import Endpoint
from ..errors import HarvestError
from .store import FINAL_STATUSES, STATUSES

#: What the result tells a Python caller to do to resume (the CLI names its command instead).
PYTHON_RESUME = "call harvest() again with the same directory to resume"


@dataclass(frozen=True)
class SeriesTask:
    """One series to harvest, and where: ``url`` is the series URL (``.../studies/S/series/SE``)."""

    study_uid: str
    series_uid: str
    endpoint: str | None
    url: str | None
    #: Why the routing chose this endpoint, or why no endpoint serves the series.
    reason: str | None = None


@dataclass(frozen=True)
class HarvestResult:
    """What a harvest run did (counts are of this run; ``skipped`` were complete before it)."""

    out_dir: Path | str  # a str: an object-store URL (s3://bucket/prefix)
    run_id: str
    series: int
    skipped: int
    by_status: Mapping[str, int]
    instances: int
    bytes: int
    seconds: float
    interrupted: bool = False

    @property
    def ok(self) -> int:
        return self.by_status.get("ok", 0)

    @property
    def failed(self) -> int:
        """Series of this run whose outcome is not final (a rerun asks for them again)."""
        return sum(n for status, n in self.by_status.items() if status not in FINAL_STATUSES)

    @property
    def remaining(self) -> int:
        """Series neither complete before nor finished in this run (interrupted or failed)."""
        return self.series - self.skipped - sum(n for s, n in self.by_status.items() if s in FINAL_STATUSES)

    def summary(self, resume: str = PYTHON_RESUME) -> str:
        """One line; ``resume`` says how to resume when series are left (the CLI names its command)."""
        statuses = ", ".join(f"{s} {self.by_status[s]:,}" for s in STATUSES if self.by_status.get(s))
        rate = self.instances / self.seconds if self.seconds else 0.0
        return (
            f"{'interrupted: ' if self.interrupted else ''}{self.series:,} series "
            f"({self.skipped:,} already complete; this run: {statuses or 'nothing to do'}), "
            f"{self.instances:,} instances, {self.bytes / 1e6:,.1f} MB in {self.seconds:,.1f} s "
            f"({rate:,.0f} instances/s) -> {self.out_dir}"
            + (f"; {self.remaining:,} series left: {resume}" if self.remaining else "")
        )

    def __str__(self) -> str:
        return self.summary()



#: With fewer requests than workers, a study of more instances than this is asked for series by series
#: (see :func:`fetch_units`). Measured on Orthanc, 4 studies of 5 series and 16 workers, by series against
#: by study: 6% and 20% faster at 60 instances a series (through a 100 ms proxy, and direct), 11% and 17%
#: at 200, mixed at 20 (8% faster, 11% slower); with 1 instance a series by study was 2x faster (3 and 12
#: studies of 6, 8 workers), with 10 as fast.
SPLIT_INSTANCES = 100


class Study(NamedTuple):
    """A study's size in the index: its series and their instances."""

    series: int
    instances: int


#: What a worker is given: one series, or two or more series of one study asked for together.
Unit = Union["SeriesTask", tuple["SeriesTask", ...]]


def series_tasks(source: Any, endpoint: Endpoint | None = None,
                 routing: str | None = None) -> tuple[list[SeriesTask], dict[str, Endpoint]]:
    """The distinct series of ``source`` with their endpoint and series URL (see :func:`harvest`)."""
    if endpoint is None and hasattr(source, "series_uids") and hasattr(source, "to_arrow"):
        source = route(source, routing)
    if hasattr(source, "routes") and hasattr(source, "endpoints"):
        if endpoint is not None:
            return series_tasks(source.routes, endpoint)
        routes = source.routes
        reasons = routes.column("reason").to_pylist() if "reason" in routes.column_names else [None] * len(routes)
        rows = routes.select(["StudyInstanceUID", "SeriesInstanceUID", "endpoint", "series_url"]).to_pylist()
        tasks = [SeriesTask(r["StudyInstanceUID"], r["SeriesInstanceUID"], r["endpoint"], r["series_url"], reason)
                 for r, reason in zip(rows, reasons)]
        return _distinct(tasks), dict(source.endpoints)
    if endpoint is None:
        raise HarvestError("no endpoint given: pass endpoint=cohort.custom(URL) or cohort.idc_proxy() "
                           "(or a coverage report, which routes each series)")
    pairs = _pairs(source)
    tasks = [SeriesTask(study, series, endpoint.name, endpoint.series_url(study, series)) for study, series in pairs]
    return _distinct(tasks), {endpoint.name: endpoint}


def _pairs(source: Any) -> Iterable[tuple[str, str]]:
    if hasattr(source, "to_arrow"):
        source = source.to_arrow()
    if hasattr(source, "columns") and not isinstance(source, pa.Table):  # pandas
        source = pa.Table.from_pandas(source, preserve_index=False)
    if isinstance(source, pa.Table):
        missing = {"StudyInstanceUID", "SeriesInstanceUID"} - set(source.column_names)
        if missing:
            raise HarvestError(f"the series table lacks {', '.join(sorted(missing))}; it has "
                               f"{', '.join(source.column_names)}")
        return zip(source.column("StudyInstanceUID").to_pylist(), source.column("SeriesInstanceUID").to_pylist())
    pairs = []
    for i, item in enumerate(source):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(u, str) and u for u in item)):
            raise HarvestError(f"item {i} of the series list is {item!r}; give (StudyInstanceUID, SeriesInstanceUID) pairs")
        pairs.append((item[0], item[1]))
    return pairs


def _distinct(tasks: list[SeriesTask]) -> list[SeriesTask]:
    bad = [t for t in tasks if not t.study_uid or not t.series_uid]
    if bad:
        raise HarvestError(f"{len(bad)} series lack a StudyInstanceUID or SeriesInstanceUID, e.g. {bad[0]}")
    first: dict[str, SeriesTask] = {}
    for task in tasks:
        first.setdefault(task.series_uid, task)
    return list(first.values())


def whole_studies(source: Any) -> dict[str, Study] | None:
    """The studies of which a :class:`~cohort.Cohort` holds every series in its index (two or more), with
    their size (None: ``source`` is not a cohort, so nothing is known of its studies)."""
    if not (hasattr(source, "catalog") and hasattr(source, "to_arrow")):
        return None
    series = source.to_arrow().select(["StudyInstanceUID", "SeriesInstanceUID"])
    table = source.catalog.sql(
        "WITH wanted AS (SELECT StudyInstanceUID, count(DISTINCT SeriesInstanceUID) AS n FROM _wanted GROUP BY 1 "
        "HAVING n > 1), "
        "held AS (SELECT StudyInstanceUID, count(*) AS n, sum(instanceCount) AS instances FROM index "
        "WHERE StudyInstanceUID IN (SELECT StudyInstanceUID FROM wanted) GROUP BY 1) "
        "SELECT StudyInstanceUID, held.n, held.instances FROM wanted JOIN held USING (StudyInstanceUID) "
        "WHERE wanted.n = held.n",
        source="cohort.harvest.whole_studies", register={"_wanted": series})
    columns = (c.to_pylist() for c in table.columns)
    return {study: Study(n, int(instances or 0)) for study, n, instances in zip(*columns)}


def fetch_units(todo: list[SeriesTask], by_study: bool, whole: Mapping[str, Study] | None = None,
                fill: int = 0) -> list[Unit]:
    """``todo`` as the requests to make, in its order: the series of a study together when ``by_study``
    and two or more of them are asked of one endpoint, and (if ``whole`` is given) ``todo`` holds all of
    the study's ``whole[study].series`` series (none complete before, none at another endpoint).

    With ``whole`` and ``fill`` (the workers), when the requests would be fewer than the workers, a
    study of more than :data:`SPLIT_INSTANCES` instances is asked for series by series: its series
    are then answered in parallel and each parsed while the next arrive, instead of one long answer
    on one worker while the others idle.
    """
    if not by_study:
        return list(todo)
    groups: dict[str, list[SeriesTask]] = {}
    for task in todo:
        groups.setdefault(task.study_uid, []).append(task)
    together = {study: tuple(tasks) for study, tasks in groups.items()
                if len(tasks) > 1 and all(t.url is not None and t.endpoint == tasks[0].endpoint for t in tasks)
                and (whole is None or study in whole and whole[study].series == len(tasks))}
    if whole is not None and len(todo) - sum(len(tasks) - 1 for tasks in together.values()) < fill:
        together = {study: tasks for study, tasks in together.items() if whole[study].instances <= SPLIT_INSTANCES}
    units: list[Unit] = []
    for task in todo:
        if task.study_uid not in together:
            units.append(task)
        elif together[task.study_uid][0] is task:  # the study, where its first series was
            units.append(together[task.study_uid])
    return units


def study_url(series_url: str) -> str:
    """The study metadata URL of a series URL (``.../studies/S/series/SE`` → ``.../studies/S/metadata``)."""
    return series_url.rsplit("/series/", 1)[0] + "/metadata"
