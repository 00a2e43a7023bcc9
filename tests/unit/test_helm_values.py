"""deploy/helm/values.yaml (Airflow's official chart, KubernetesExecutor), checked against the code without a cluster.

The values must run the same Airflow as the image, hand the pipeline every setting it cannot do without,
keep every secret in a Kubernetes Secret, share files through the object store and keep logs off the pods.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
VALUES: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "_KEY")


def is_secret(name: str) -> bool:
    return any(word in name for word in SECRET_WORDS) or name.startswith("AIRFLOW_CONN_") or name == "WAREHOUSE_URL"


def env_names() -> dict[str, str]:
    return {entry["name"]: str(entry["value"]) for entry in VALUES["env"]}


def secret_names() -> set[str]:
    return {entry["envName"] for entry in VALUES["secret"]}


def test_the_executor_and_airflow_match_the_image() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    version = re.search(r"FROM apache/airflow:([0-9.]+)", dockerfile).group(1)
    pinned = re.search(r"^apache-airflow==([0-9.]+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE).group(1)
    assert VALUES["executor"] == "KubernetesExecutor"
    assert VALUES["airflowVersion"] == version == pinned


def test_secrets_only_come_from_kubernetes_secrets() -> None:
    for name, value in env_names().items():
        assert not is_secret(name), f"{name} must come from a Secret"
        if "://" in value:
            assert "@" not in value.split("://", 1)[1].split("/", 1)[0], f"{name} carries credentials"
    for entry in VALUES["secret"]:
        assert set(entry) == {"envName", "secretName", "secretKey"}
        assert is_secret(entry["envName"]), entry
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert VALUES[key], key
    assert VALUES["data"]["metadataSecretName"]
    assert not VALUES["postgresql"]["enabled"] and not VALUES["redis"]["enabled"]


def test_the_pipeline_gets_what_it_cannot_do_without() -> None:
    given = set(env_names()) | secret_names()
    needed = {
        "WAREHOUSE_URL",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "NIGHTLY_ML_STORAGE_URL",
        "NIGHTLY_ML_BASE_URL",
        "NIGHTLY_ML_REPORTS_URL",
        "ALERT_EMAILS",
    }
    assert needed <= given, needed - given
    config = (ROOT / "include" / "nightly_ml" / "config.py").read_text()
    for name in given:
        if name.startswith(("NIGHTLY_ML_", "ALERT_")):
            assert f'"{name}"' in config, f"{name} is set for the pods but nightly_ml.config never reads it"


def test_files_are_shared_through_the_object_store_and_logs_leave_the_pods() -> None:
    assert env_names()["NIGHTLY_ML_STORAGE_URL"].startswith("s3://")
    logging = VALUES["config"]["logging"]
    assert logging["remote_logging"] == "True" and logging["remote_base_log_folder"].startswith("s3://")
    assert env_names()["GX_ANALYTICS_ENABLED"] == "false" and env_names()["MLFLOW_ENABLE_TELEMETRY"] == "false"


def test_the_ui_is_not_exposed_by_a_node_port() -> None:
    assert VALUES["apiServer"]["service"]["type"] == "ClusterIP"
