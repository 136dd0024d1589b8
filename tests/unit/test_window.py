from __future__ import annotations

from datetime import datetime, timezone

from gradesync.config import parse_config
from gradesync.pipeline import Window, resolve_window

CONFIG = parse_config({"name": "a", "api_version": "1.2", "connection_id": "ic", "full_sync_weekday": "sun"})
UTC = timezone.utc
MARK = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
# Tuesday 2026-11-24 02:00 -> Wednesday 2026-11-25 02:00
TUE, WED = datetime(2026, 11, 24, 2, tzinfo=UTC), datetime(2026, 11, 25, 2, tzinfo=UTC)


def test_first_load_is_full_even_for_a_scheduled_run() -> None:
    window = resolve_window(CONFIG, interval_start=TUE, interval_end=WED, watermark=None)
    assert window.full and "first load" in window.reason


def test_scheduled_run_extracts_its_data_interval() -> None:
    window = resolve_window(CONFIG, interval_start=TUE, interval_end=WED, watermark=MARK)
    assert window == Window(False, TUE, WED, "data interval")


def test_weekly_full_sync_on_the_configured_day() -> None:
    sat, sun = datetime(2026, 11, 28, 2, tzinfo=UTC), datetime(2026, 11, 29, 2, tzinfo=UTC)
    assert resolve_window(CONFIG, interval_start=sat, interval_end=sun, watermark=MARK).full


def test_manual_run_without_interval_uses_the_watermark() -> None:
    window = resolve_window(CONFIG, interval_start=WED, interval_end=WED, watermark=MARK)
    assert window == Window(False, MARK, None, "stored watermark")


def test_manual_run_ignores_the_interval_airflow_infers_for_it() -> None:
    window = resolve_window(CONFIG, interval_start=TUE, interval_end=WED, watermark=MARK, run_type="manual")
    assert window == Window(False, MARK, None, "stored watermark")


def test_backfill_runs_extract_their_own_interval() -> None:
    window = resolve_window(CONFIG, interval_start=TUE, interval_end=WED, watermark=MARK, run_type="backfill")
    assert window == Window(False, TUE, WED, "data interval")


def test_params_win_over_everything() -> None:
    assert resolve_window(CONFIG, full_refresh=True, interval_start=TUE, interval_end=WED, watermark=MARK).full
    since = datetime(2026, 1, 1, tzinfo=UTC)
    window = resolve_window(CONFIG, since=since, interval_start=TUE, interval_end=WED, watermark=None)
    assert window.since == since and not window.full


def test_window_round_trips_through_xcom_json() -> None:
    window = Window(False, TUE, WED, "data interval")
    assert Window.from_dict(window.to_dict()) == window


def test_backfill_on_the_full_sync_day_still_reads_only_its_interval() -> None:
    sat, sun = datetime(2026, 11, 28, 2, tzinfo=UTC), datetime(2026, 11, 29, 2, tzinfo=UTC)
    window = resolve_window(CONFIG, interval_start=sat, interval_end=sun, watermark=MARK, run_type="backfill")
    assert window == Window(False, sat, sun, "data interval")
