-- The promotion decision a retrain run made (its actor ends with the Airflow run id).
SELECT action, from_version, to_version, gate_reasons FROM ops.promotion_history
WHERE actor LIKE %(actor)s ORDER BY id DESC LIMIT 1;
