-- Runs once when the compose Postgres volume is first created: a separate database for the warehouse.
CREATE DATABASE warehouse OWNER airflow;
