"""One Airflow DAG (``grade_sync_<name>``) per integration YAML in include/integrations/.

Thin on purpose: all logic lives in the ``gradesync`` package. Set GRADESYNC_INTEGRATIONS_DIR to
read integrations from another folder.
"""

from gradesync.dag_factory import build_dags

globals().update(build_dags())
