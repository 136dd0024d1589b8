"""Extract one OneRoster gradebook entity from IC into Parquet staging: concurrent, streamed, exact.

How a scan stays exact while IC's data changes under it
-------------------------------------------------------
Pages are requested with ``sort=sourcedId`` at offsets ``0, s, 2s, …`` where the stride
``s = page_size - overlap``: consecutive pages deliberately share ``overlap`` records. Pages are
fetched concurrently (up to the client's request limit) once the first page's ``X-Total-Count``
is known, and *accepted* strictly in offset order. A page is accepted only if it shares at least
one ``sourcedId`` with the previously accepted page: two contiguous slices of the sorted collection
that share a record leave no record that existed during both requests uncovered. When inserts
or deletes before a page shifted it so far that it shares nothing (a possible gap), the engine
fetches fresh pages walking back from that offset until the chain is continuous again, then walks
forward (“bridging”). Records seen twice (the overlap, or shifts) are dropped against a bounded
window of recently accepted ids, so memory stays bounded by page and chunk size, never by the
entity's size. The scan ends at the first accepted page that is shorter than requested.

The unique records are then compared with ``X-Total-Count``. If the total never changed during
the scan and the numbers still disagree, or the chain could not be bridged, the whole entity is
re-scanned (``max_scans``) and then the task fails loudly: a silent short count is never staged.

The chain guarantees every record that existed throughout the scan. Records inserted or modified
*while* it ran are caught up afterwards: a small filtered pass re-reads everything (in the window)
modified since the scan started, minus ``catchup_margin`` for clock skew between worker and IC,
and its copies replace older ones, so the staged set is IC's state at the end of the extraction.
A scan answered by a single page needs no catch-up (typical of nightly deltas): one response is
one consistent state.
Records hard-deleted during the scan may still be staged; the next full sync removes them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from airflow.sdk import ObjectStoragePath

from gradesync.entities import get_entity
from gradesync.oneroster.client import OneRosterClient, Page, date_filter
from gradesync.oneroster.errors import ExtractionError
from gradesync.records import Reject, arrow_schema
from gradesync.staging import (
    MANIFEST_NAME,
    PageDecoder,
    ParsedPage,
    PartWriter,
    clear_directory,
    staging_path,
    write_json,
)

log = logging.getLogger(__name__)

_MAX_BRIDGE_STEPS = 16
_DEDUPE_WINDOW_PAGES = 24  # > bridging steps, so re-read pages are always recognised


@dataclass
class ExtractManifest:
    """What an extract task staged; small and JSON-serialisable, so it is the task's XCom value."""

    entity: str
    api_version: str
    files: list[str]
    rejects_file: str | None
    counts: dict[str, int]
    max_date_last_modified: str | None
    full: bool
    started_at: str
    finished_at: str
    since: str | None = None
    until: str | None = None
    staging_dir: str | None = None
    retry_reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractManifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_overlap(page_size: int) -> int:
    """Records shared by consecutive pages: tolerates that many deletes between two page requests."""
    if page_size <= 1:
        return 0
    return max(1, min(16, page_size // 50))


@dataclass
class _Fetched:
    offset: int
    limit: int
    total: int | None
    parsed: ParsedPage
    ids: list[str | None]
    idset: set[str]
    fresh: bool = False  # fetched during bridging

    @property
    def count(self) -> int:
        return self.parsed.received


class _ScanFailed(Exception):
    """This scan cannot be trusted; re-scan the entity."""


class _Progress:
    def __init__(self, entity: str, client: OneRosterClient, every: float, baseline: dict[str, Any]):
        self.entity = entity
        self.client = client
        self.every = every
        self.baseline = baseline
        self.started = time.monotonic()
        self.last = self.started

    def maybe_log(self, *, pages: int, planned: int, records: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = records / elapsed
        stats = self.client.stats.snapshot()
        base = self.baseline
        requests = stats["requests"] - base["requests"]
        retried = stats["retries"] - base["retries"]
        reasons = {k: n - base["reasons"].get(k, 0) for k, n in stats["reasons"].items()}
        if total:
            share = f"{records:,}/{total:,} records ({min(records / total, 1.0):.0%})"
            remaining = max(total - records, 0)
            eta = f", ETA {remaining / rate:,.0f}s" if rate > 0 and remaining else ""
        else:
            share, eta = f"{records:,} records", ""
        retries = ", ".join(f"{k}×{n}" for k, n in sorted(reasons.items()) if n) or "none"
        log.info(
            "%s: %d/%d pages, %s, %.0f records/s%s; %d requests, retries %d (%s)",
            self.entity, pages, max(planned, pages), share, rate, eta, requests, retried, retries,
        )


def extract_entity(
    client: OneRosterClient,
    entity_name: str,
    staging_dir: ObjectStoragePath | str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 1000,
    chunk_rows: int = 100_000,
    overlap: int | None = None,
    max_scans: int = 3,
    catchup_margin: timedelta | None = timedelta(minutes=15),
    progress_every: float = 10.0,
) -> ExtractManifest:
    """Stage every record of ``entity_name`` (modified in ``(since, until]`` when given) as Parquet parts.

    ``staging_dir`` is emptied first, so a retried task never mixes two attempts. After a main scan
    of more than one page a catch-up pass re-reads what changed while it ran (``dateLastModified``
    later than the scan's start minus ``catchup_margin``, which absorbs clock skew between this worker and IC) and
    replaces older copies, so the staged set matches IC as of the end of the extraction; ``None``
    disables it. Returns the manifest; ``max_date_last_modified`` is the candidate watermark
    (advance it only after the load committed). Raises ``UnsupportedEntityError`` for an entity the
    API version lacks, ``CredentialsError`` for rejected credentials and ``ExtractionError`` when
    the data cannot be read completely.
    """
    entity = get_entity(entity_name)
    client.collection_url(entity_name)  # unsupported entity → clear error before any I/O
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    overlap = default_overlap(page_size) if overlap is None else max(0, min(overlap, page_size - 1))
    started_at = datetime.now(timezone.utc)
    directory = staging_path(staging_dir)
    filter_text = date_filter(since, until)
    api_version = client.api_version
    schema = arrow_schema(entity, api_version)
    decoder = PageDecoder(entity, api_version)
    baseline = client.stats.snapshot()
    log.info(
        "Extracting %s (OneRoster %s) %s into %s; page size %d, overlap %d, up to %d concurrent requests",
        entity_name, api_version, f"with filter {filter_text}" if filter_text else "in full", directory,
        page_size, overlap, client.max_concurrency,
    )

    def new_scan(filter_: str | None, writer: Any) -> _Scan:
        return _Scan(client, entity_name, decoder, filter_, page_size, overlap, writer, progress_every, baseline)

    scans = 0
    while True:
        scans += 1
        clear_directory(directory)
        scan_started = datetime.now(timezone.utc)
        writer = PartWriter(directory, schema, chunk_rows)
        scan = new_scan(filter_text, writer)
        try:
            scan.run()
            writer.close()
            catch = _catch_up(new_scan, schema, since, until,
                              None if catchup_margin is None or scan.atomic else scan_started - catchup_margin,
                              chunk_rows)
            replaced = writer.replace(catch.ids, catch.table, catch.rejects) if catch.ids else 0
            break
        except _ScanFailed as exc:
            writer.abort()
            if scans >= max_scans:
                clear_directory(directory)
                raise ExtractionError(
                    f"{entity_name}: could not read a consistent copy from IC in {scans} scans; last problem: "
                    f"{exc}. Nothing was staged; rerun later (IC data was changing heavily) or lower page_size."
                ) from None
            log.warning("%s: scan %d is not trustworthy (%s); scanning again", entity_name, scans, exc)
        except BaseException:
            writer.abort()
            raise
    stats = client.stats.snapshot()
    max_dlm = max((d for d in (scan.max_dlm, catch.max_dlm) if d is not None), default=None)
    counts = {
        "received": writer.rows_written + writer.rejects_written,
        "staged": writer.rows_written,
        "rejected": writer.rejects_written,
        "duplicates_in_scan": scan.duplicates,
        "overlap": scan.overlap_copies,
        "pages": scan.pages,
        "bridge_pages": scan.bridge_pages,
        "catchup_records": catch.received,
        "replaced": replaced,
        "requests": stats["requests"] - baseline["requests"],
        "retries": stats["retries"] - baseline["retries"],
        "total_reported": scan.total_last if scan.total_last is not None else -1,
        "scans": scans,
    }
    reasons = {k: v - baseline["reasons"].get(k, 0) for k, v in stats["reasons"].items()}
    manifest = ExtractManifest(
        entity=entity_name,
        api_version=api_version,
        files=list(writer.files),
        rejects_file=writer.rejects_file,
        counts=counts,
        max_date_last_modified=max_dlm.isoformat().replace("+00:00", "Z") if max_dlm else None,
        full=since is None and until is None,
        started_at=started_at.isoformat(),
        finished_at=datetime.now(timezone.utc).isoformat(),
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        staging_dir=str(directory),
        retry_reasons={k: v for k, v in reasons.items() if v},
    )
    write_json(directory / MANIFEST_NAME, manifest.to_dict())
    scan.progress.maybe_log(pages=scan.pages, planned=scan.planned, records=counts["received"],
                            total=scan.total_last, force=True)
    log.info(
        "%s: staged %d records in %d file(s), %d rejected, %d duplicate copies dropped, %d re-read by catch-up "
        "(%d replaced); %d requests, %d retries; max dateLastModified %s (fast decode %d pages, exact route %d)",
        entity_name, counts["staged"], len(manifest.files), counts["rejected"], counts["duplicates_in_scan"],
        counts["catchup_records"], replaced, counts["requests"], counts["retries"],
        manifest.max_date_last_modified, decoder.fast_pages, decoder.slow_pages,
    )
    return manifest


class _Collector:
    """Writer stand-in for catch-up passes: their (few) records stay in memory."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.rejects: list[Reject] = []

    def write(self, table: pa.Table) -> None:
        self.tables.append(table)

    def write_rejects(self, rejects: list[Reject]) -> None:
        self.rejects.extend(rejects)


@dataclass
class _CatchUp:
    table: pa.Table
    rejects: list[Reject]
    ids: set[str]
    received: int = 0
    max_dlm: datetime | None = None


_CATCHUP_ROUNDS = 3


def _catch_up(
    new_scan: Callable[[str | None, Any], _Scan],
    schema: pa.Schema,
    since: datetime | None,
    until: datetime | None,
    lower: datetime | None,
    max_rows: int,
) -> _CatchUp:
    """Re-read records modified after ``lower`` (within the window); the latest copy of each wins.

    A pass answered by a single page is atomic, so the records it returns are IC's latest; a longer
    pass is repeated (at most three times) because records may have changed while it was paged.
    """
    result = _CatchUp(schema.empty_table(), [], set())
    if lower is None:
        return result
    if since is not None:
        lower = max(lower, since)
    if until is not None and lower >= until:
        return result
    filter_text = date_filter(lower, until)
    for _ in range(_CATCHUP_ROUNDS):
        collector = _Collector()
        scan = new_scan(filter_text, collector)
        scan.progress.every = float("inf")
        scan.run()
        table = pa.concat_tables([schema.empty_table(), *collector.tables])
        found = table.num_rows + len(collector.rejects)
        result.received += found
        if found:
            ids = set(table.column("sourced_id").to_pylist()) | {
                r.sourced_id for r in collector.rejects if r.sourced_id is not None
            }
            wanted = pa.array(sorted(ids), pa.string())
            older = result.table.filter(pc.invert(pc.is_in(result.table.column("sourced_id"), wanted)))
            result.table = pa.concat_tables([older, table])
            result.rejects = [r for r in result.rejects if r.sourced_id not in ids] + collector.rejects
            result.ids |= ids
            if scan.max_dlm is not None and (result.max_dlm is None or scan.max_dlm > result.max_dlm):
                result.max_dlm = scan.max_dlm
            if len(result.ids) > max_rows:
                raise _ScanFailed(f"more than {max_rows} records changed while the entity was read")
        if scan.atomic:
            break
    if result.received:
        log.info("Catch-up re-read %d record(s) changed since %s", result.received, lower.isoformat())
    return result


class _Scan:
    """One pass over the entity; raises ``_ScanFailed`` when its result cannot be trusted."""

    def __init__(
        self,
        client: OneRosterClient,
        entity_name: str,
        decoder: PageDecoder,
        filter_text: str | None,
        page_size: int,
        overlap: int,
        writer: Any,
        progress_every: float,
        baseline: dict[str, Any],
    ):
        self.client = client
        self.entity_name = entity_name
        self.decoder = decoder
        self.filter = filter_text
        self.limit = page_size
        self.stride = page_size - overlap
        self.overlap = overlap
        self.writer = writer
        self.progress = _Progress(entity_name, client, progress_every, baseline)
        self.pages = 0
        self.planned = 1
        self.bridge_pages = 0
        self.staged = 0
        self.rejected = 0
        self.duplicates = 0
        self.overlap_copies = 0
        self.totals: set[int] = set()
        self.total_last: int | None = None
        self.drift_seen = False
        self.max_dlm: datetime | None = None
        self._window: dict[str, int] = {}
        self._window_pages: deque[list[str]] = deque()
        self._prev: _Fetched | None = None

    # -- fetching ------------------------------------------------------------------------------

    def fetch(self, offset: int, *, fresh: bool = False) -> _Fetched:
        page: Page[ParsedPage] = self.client.get_page(
            self.entity_name, offset=offset, limit=self.limit, filter=self.filter, decode=self.decoder.parse
        )
        parsed = page.data
        if page.total is not None:
            self.totals.add(page.total)
            self.total_last = page.total
        ids = parsed.ids
        return _Fetched(offset, self.limit, page.total, parsed, ids, {i for i in ids if i is not None}, fresh)

    # -- the scan ------------------------------------------------------------------------------

    def run(self) -> None:
        first = self.fetch(0)
        if first.total is not None and 0 < first.count < min(self.limit, first.total):
            log.warning("%s: IC returned %d records for limit=%d; using %d as the page size",
                        self.entity_name, first.count, self.limit, first.count)
            self.limit = first.count
            self.overlap = min(self.overlap, max(self.limit - 1, 0))
            self.stride = self.limit - self.overlap
        self.accept(first)
        if first.count < self.limit:
            self.finish()
            return
        if first.total is None:
            self.sequential(first)
        else:
            self.concurrent(first.total)
        self.finish()

    def planned_offsets(self, total: int) -> list[int]:
        if self.stride <= 0:
            return []
        offsets = []
        offset = self.stride
        while offset < total:
            offsets.append(offset)
            offset += self.stride
        return offsets

    def concurrent(self, total: int) -> None:
        offsets = self.planned_offsets(total)
        self.planned = len(offsets) + 1
        ahead = max(4, self.client.max_concurrency * 4)  # pages fetched ahead of the consumer (bounded memory)
        futures: dict[int, Future[_Fetched]] = {}
        # twice as many threads as request slots: a thread decoding its page has released its slot,
        # and another thread is ready to take it at once (the client's throttle caps requests in flight)
        with ThreadPoolExecutor(max_workers=2 * self.client.max_concurrency,
                                thread_name_prefix=f"extract-{self.entity_name}") as pool:
            try:
                next_submit = 0
                for index in range(len(offsets)):
                    while next_submit < len(offsets) and next_submit < index + ahead:
                        futures[next_submit] = pool.submit(self.fetch, offsets[next_submit])
                        next_submit += 1
                    candidate = futures.pop(index).result()
                    if not self.chain(candidate):
                        return  # reached the end of the collection early
                    self.progress.maybe_log(pages=self.pages, planned=self.planned, records=self.staged + self.rejected,
                                            total=self.total_last)
            finally:
                for future in futures.values():
                    future.cancel()
        assert self._prev is not None
        if self._prev.count >= self.limit:  # the collection grew during the scan: read on
            self.sequential(self._prev)

    def sequential(self, prev: _Fetched) -> None:
        offset = prev.offset + self.stride
        while True:
            candidate = self.fetch(offset)
            self.planned = max(self.planned, self.pages + 1)
            if not self.chain(candidate):
                return
            assert self._prev is not None
            offset = self._prev.offset + self.stride
            self.progress.maybe_log(pages=self.pages, planned=self.planned, records=self.staged + self.rejected,
                                    total=self.total_last)

    def chain(self, candidate: _Fetched) -> bool:
        """Accept ``candidate`` after the previous page, bridging a gap; ``False`` once the data has ended.

        A gap is bridged by fresh pages walking back from the candidate's offset until one is
        continuous with the previous page, then forward (the candidate is tried once more, else
        re-read fresh) until the candidate's offset is covered.
        """
        assert self._prev is not None
        if self._prev.count < self.limit:
            return False
        probe = candidate
        candidate_retry = True
        steps = 0
        while True:
            prev = self._prev
            assert prev is not None
            if self.continuous(prev, probe):
                self.accept(probe)
                if probe.count < self.limit or probe.offset >= candidate.offset:
                    return probe.count >= self.limit
                following = probe.offset + self.stride
                if following == candidate.offset and candidate_retry:
                    candidate_retry = False
                    probe = candidate
                else:
                    probe = self.bridge(following)
                continue
            self.drift_seen = True
            steps += 1
            if steps > _MAX_BRIDGE_STEPS or probe.offset == 0:
                raise _ScanFailed(
                    f"no continuous chain of pages around offset {candidate.offset} after {steps} bridging steps"
                )
            back = max(0, probe.offset - self.stride)
            log.info("%s: page at offset %d shares no record with the previous page (data shifted); "
                     "re-reading from offset %d", self.entity_name, probe.offset, back)
            probe = self.bridge(back)

    def bridge(self, offset: int) -> _Fetched:
        self.bridge_pages += 1
        return self.fetch(offset, fresh=True)

    def continuous(self, prev: _Fetched, page: _Fetched) -> bool:
        if self.overlap == 0 or not page.ids:
            return True  # nothing to compare (no overlap requested, or an empty page ends the scan)
        if not prev.idset or not page.idset:
            return True  # records without sourcedId cannot be chained; counted as rejects
        return not prev.idset.isdisjoint(page.idset)

    def accept(self, page: _Fetched) -> None:
        """Stage the records of ``page`` that were not seen in the recent window."""
        prev = self._prev
        expected_overlap: set[str] = set()
        if prev is not None and self.overlap:
            tail = [i for i in prev.ids[-self.overlap:] if i is not None]
            expected_overlap = set(tail)
        window = self._window
        keep: list[bool] = []
        fresh_ids: list[str] = []
        seen_here: set[str] = set()
        decoded = self.decoder.finish(page.parsed)
        table = decoded.table
        n_rows = table.num_rows
        ids: list[str | None] = table.column("sourced_id").to_pylist() if n_rows else []
        ids.extend(r.sourced_id for r in decoded.rejects)
        dropped = 0
        for sid in ids:
            if sid is None:
                keep.append(True)
                continue
            if sid in window or sid in seen_here:
                keep.append(False)
                dropped += 1
                if sid in expected_overlap:
                    self.overlap_copies += 1
                else:
                    self.duplicates += 1
                    if sid not in seen_here:
                        self.drift_seen = True
                continue
            keep.append(True)
            seen_here.add(sid)
            fresh_ids.append(sid)
        if dropped:
            table = table.filter(pa.array(keep[:n_rows], pa.bool_())) if n_rows else table
        rejects = [r for r, k in zip(decoded.rejects, keep[n_rows:], strict=True) if k]
        if table.num_rows:
            self.writer.write(table)
            self.staged += table.num_rows
            dlm = pc.max(table.column("date_last_modified")).as_py()
            if dlm is not None and (self.max_dlm is None or dlm > self.max_dlm):
                self.max_dlm = dlm
        if rejects:
            self.writer.write_rejects(rejects)
            self.rejected += len(rejects)
        self.remember(fresh_ids)
        self.pages += 1
        self._prev = page

    def remember(self, ids: list[str]) -> None:
        """Keep the ids of the last few accepted pages for duplicate detection (bounded memory)."""
        for sid in ids:
            self._window[sid] = 1
        self._window_pages.append(ids)
        if len(self._window_pages) > _DEDUPE_WINDOW_PAGES:
            for sid in self._window_pages.popleft():
                self._window.pop(sid, None)

    @property
    def atomic(self) -> bool:
        """Answered by one page: one response is one consistent state, nothing changed while it ran."""
        return self.pages <= 1 and self.bridge_pages == 0

    def finish(self) -> None:
        """Compare what was received with what IC reported; distrust an unexplained difference."""
        unique = self.staged + self.rejected
        total = self.total_last
        if total is None or unique == total:
            return
        changed = len(self.totals) > 1 or self.drift_seen
        if changed:
            log.warning(
                "%s: received %d unique records, IC reported %s (totals seen: %s); records changed during the "
                "scan, which was kept continuous, so changes made meanwhile fall to the next run's window",
                self.entity_name, unique, total, sorted(self.totals),
            )
            return
        raise _ScanFailed(f"received {unique} unique records but X-Total-Count was {total} throughout")

