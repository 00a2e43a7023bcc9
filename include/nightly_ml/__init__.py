"""nightly_ml: the pipeline package behind the Airflow DAGs (ETL, validation, drift, training, promotion, scoring)."""

__version__ = "0.1.0"
