"""Change over time through the admin API, as delta syncs see it."""

from __future__ import annotations

from sandbox_client import OneRosterClient

from gradesync.sandbox import SandboxProcess


def _latest(records: list[dict]) -> str:
    return max(r["dateLastModified"] for r in records)


def test_modify_add_delete_show_up_in_a_delta_query(fresh12: SandboxProcess) -> None:
    admin, client = fresh12.admin, OneRosterClient(fresh12)
    watermark = _latest(admin.records("results"))
    modified = admin.modify("results", count=4)
    added = admin.add("results", count=2)
    tombstoned = admin.delete("results", count=2, mode="tombstone")
    delta = client.all("results", "results", filter=f"dateLastModified>'{watermark}'")
    assert {r["sourcedId"] for r in delta} == set(modified) | set(added) | set(tombstoned)
    assert all(r["status"] == "tobedeleted" for r in delta if r["sourcedId"] in tombstoned)
    stamps = [r["dateLastModified"] for r in delta]
    assert len(set(stamps)) == len(stamps)  # every change gets its own, later instant
    assert fresh12.admin.now() > _latest(delta)


def test_vanish_removes_a_record_everywhere(fresh12: SandboxProcess) -> None:
    admin, client = fresh12.admin, OneRosterClient(fresh12)
    before = admin.records("line_items")
    (gone,) = admin.delete("line_items", count=1, mode="vanish")
    assert client.get(f"lineItems/{gone}").status_code == 404
    assert gone not in {li["sourcedId"] for li in client.all("lineItems", "lineItems")}
    assert len(admin.records("line_items")) == len(before) - 1


def test_every_gradebook_entity_can_change(fresh12: SandboxProcess) -> None:
    admin = fresh12.admin
    for entity in ("categories", "line_items", "results", "score_scales", "assessment_line_items",
                   "assessment_results"):
        watermark = _latest(admin.records(entity))
        changed = admin.modify(entity, count=1) + admin.add(entity, count=1)
        assert len(changed) == 2, entity
        after = {r["sourcedId"]: r for r in admin.records(entity)}
        assert all(after[c]["dateLastModified"] > watermark for c in changed), entity


def test_admin_rejects_unknown_entities_and_v11_only_entities(fresh12: SandboxProcess) -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown entity"):
        fresh12.admin.records("grades")
    with SandboxProcess(api="1.1", preset="tiny") as v11, pytest.raises(ValueError, match="not served"):
        v11.admin.records("assessment_results")


def test_parallel_scans_while_data_changes(fresh12: SandboxProcess) -> None:
    """Five concurrent extractors (IC's off-peak limit) and a teacher regrading at the same time."""
    import threading

    total = len(fresh12.admin.records("results"))
    outcomes: list[list[str]] = []
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            client = OneRosterClient(fresh12)
            outcomes.append([r["sourcedId"] for r in client.all("results", "results", limit=20)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scan) for _ in range(5)]
    for t in threads:
        t.start()
    for _ in range(10):
        fresh12.admin.modify("results", count=3)
    for t in threads:
        t.join()
    assert not errors
    assert len(outcomes) == 5 and all(sorted(ids) == sorted(outcomes[0]) and len(ids) == total for ids in outcomes)
    assert fresh12.admin.stats()["max_concurrency"] >= 2
