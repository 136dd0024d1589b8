# Image for docker-compose.yaml: the official Airflow image plus gradesync and its pinned dependencies.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:0 requirements.txt constraints.txt pyproject.toml /opt/gradesync/
COPY --chown=airflow:0 include /opt/gradesync/include
RUN pip install --no-cache-dir -r /opt/gradesync/requirements.txt -c /opt/gradesync/constraints.txt \
 && pip install --no-cache-dir --no-deps -e /opt/gradesync
