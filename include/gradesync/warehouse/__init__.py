"""The gradesync warehouse: schema, migrations, locks and the bulk loader.

    from gradesync.warehouse import Warehouse, LoadCounts, warehouse_url_from_connection
    wh = Warehouse(warehouse_url_from_connection(conn), schema="gradesync")
    wh.migrate()
    with wh.integration_lock(integration_id, run_id):
        counts = wh.load_entity(integration_id, "results", "1.2", files, run_id=run_id, full_sync=False,
                                extracted=n, duplicates=d, rejects=rejects_df, watermark=wm)

See docs/warehouse.md for the tables and example queries.
"""

from gradesync.warehouse.connection import warehouse_url_from_connection
from gradesync.warehouse.core import IntegrationLocked, Warehouse
from gradesync.warehouse.loader import LoadCounts
from gradesync.warehouse.naming import InvalidIdentifier

__all__ = ["IntegrationLocked", "InvalidIdentifier", "LoadCounts", "Warehouse", "warehouse_url_from_connection"]
