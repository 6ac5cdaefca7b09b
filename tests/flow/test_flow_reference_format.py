"""The reference format: read into the same flow as today's format, each setting spelled both ways a problem with
its line, datasources whose secrets are read at run time and never logged, Teams notifications."""

from __future__ import annotations

import dataclasses
import json
import ssl
import textwrap
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from test_flow_run import statuses

from oea_core import LakePaths
from oea_core.flow import FlowError, FlowRun, load_flow
from oea_core.flow.datasources import jdbc_options
from oea_core.flow.model import Datasource, Secret
from oea_core.privacy import keyvault as keyvault_module
from oea_core.privacy.redaction import redact
from servers.keyvault import self_signed

PASSWORD = "pa55-w0rd-from-the-env"  # looked for in the run log


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def files(tmp_path: Path) -> None:
    (tmp_path / "summary.sql").write_text("SELECT school, count(*) AS n FROM source GROUP BY school\n")
    (tmp_path / "dq").mkdir(exist_ok=True)
    (tmp_path / "dq" / "no_empty_school.sql").write_text("SELECT * FROM {{ output }} WHERE school IS NULL\n")


TODAY = """\
    pipeline:
      name: twin
      description: the same flow
      default_retry: {attempts: 3, delay: 30}
      default_timeout: 20m
      notifications:
        on_failure: {webhook: "https://hooks.example/oea/TOKEN"}
        on_success: {teams: "https://tenant.webhook.office.com/webhookb2/TOKEN"}
      checkpoint: false
    stages:
      - name: load
        groups:
          - name: g
            steps:
              - {name: first, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: a},
                 retry: {attempts: 2, delay: 5}}
              - name: summarise
                kind: sql
                sql: summary.sql
                inputs: {visits: stage2p/demo/visits}
                output: {stage: stage3p, source: demo, table: summary, mode: append}
                checks: [{sql: dq/no_empty_school.sql}]
                timeout: 5m
    """

REFERENCE = """\
    pipeline:
      name: twin
      description: the same flow
      default_retry: {attempts: 3, delay_seconds: 30}
      default_timeout: 20m
      notifications:
        on_failure: "https://hooks.example/oea/TOKEN"
        on_success: "teams://tenant.webhook.office.com/webhookb2/TOKEN"
      checkpoint: {enabled: false}
      stages:
        - name: load
          groups:
            - name: g
              steps:
                - {name: first, kind: python, callable: "oea_testing.flow_helpers:record", parameters: {marker: a},
                   retry: {attempts: 2, delay_seconds: 5}}
                - name: summarise
                  sql: summary.sql
                  inputs: {visits: stage2p/demo/visits}
                  destination: {format: delta, path: stage3p/demo/summary, mode: append}
                  dq_checks: [dq/no_empty_school.sql]
                  timeout: 5m
    """


def without_lines(flow) -> dict:
    return {name: {k: v for k, v in dataclasses.asdict(step).items() if k != "line"} for name, step in flow.steps.items()}


def test_a_flow_in_the_reference_format_loads_like_its_twin_in_todays_format(tmp_path):
    files(tmp_path)
    today, reference = load_flow(write(tmp_path, TODAY, "today.yaml")), load_flow(write(tmp_path, REFERENCE))
    assert without_lines(reference) == without_lines(today)
    for setting in ("name", "description", "retry", "timeout", "notifications", "checkpoint", "checkpoint_path",
                    "max_parallel", "stages"):
        assert getattr(reference, setting) == getattr(today, setting), setting
    summarise = reference.steps["summarise"]
    assert summarise.kind == "sql" and summarise.output == {"stage": "stage3p", "source": "demo", "table": "summary",
                                                            "mode": "append"}
    assert [(c.name, c.sql, c.params, c.severity) for c in summarise.checks] == [
        ("no_empty_school", str(tmp_path / "dq" / "no_empty_school.sql"), {}, "error")]
    assert reference.retry.delay == 30.0 and reference.steps["first"].retry.delay == 5.0
    assert reference.notifications == {"on_failure": {"webhook": "https://hooks.example/oea/TOKEN"},
                                       "on_success": {"teams": "https://tenant.webhook.office.com/webhookb2/TOKEN"}}


def test_a_notification_written_as_text_is_a_webhook_a_teams_webhook_or_a_command(tmp_path):
    flow = load_flow(write(tmp_path, """\
        pipeline:
          name: n
          notifications: {on_failure: "http://127.0.0.1:9/hook", on_success: "echo $OEA_FLOW_STATUS"}
          stages: [{name: s, groups: [{name: g, steps: [{name: a, kind: python, callable: "oea_testing.flow_helpers:record"}]}]}]
        """))
    assert flow.notifications == {"on_failure": {"webhook": "http://127.0.0.1:9/hook"},
                                  "on_success": {"command": "echo $OEA_FLOW_STATUS"}}


ONE_STEP = ("[{name: s, groups: [{name: g, steps: [{name: a, kind: python, callable: 'oea_testing.flow_helpers:record', "
            "parameters: {marker: a}}]}]}]")


@pytest.mark.parametrize("text, line, problem", [
    (f"""\
        pipeline:
          name: t
          stages: {ONE_STEP}
        stages: {ONE_STEP}
        """, 3, ("pipeline.stages: the same setting is spelled both ways, 'stages (top level)' (line 4) and "
                "'pipeline.stages' (line 3); keep one")),
    (f"""\
        pipeline:
          name: t
          default_retry:
            attempts: 2
            delay: 10
            delay_seconds: 10
        stages: {ONE_STEP}
        """, 6, ("pipeline.default_retry.delay_seconds: the same setting is spelled both ways, "
                "'pipeline.default_retry.delay' (line 5) and 'pipeline.default_retry.delay_seconds' (line 6); keep one")),
    ("""\
        pipeline: {name: t}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - name: a
                    kind: python
                    callable: oea_testing.flow_helpers:record
                    retry: {attempts: 2, delay_seconds: 1, delay: 1}
        """, 10, ("step a.retry.delay_seconds: the same setting is spelled both ways, 'step a.retry.delay' (line 10) "
                 "and 'step a.retry.delay_seconds' (line 10); keep one")),
    ("""\
        pipeline: {name: t}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - name: a
                    kind: python
                    callable: oea_testing.flow_helpers:record
                    checks: [{sql: dq/no_empty_school.sql}]
                    dq_checks: [dq/no_empty_school.sql]
        """, 11, ("step a.dq_checks: the same setting is spelled both ways, 'step a.checks' (line 10) and "
                 "'step a.dq_checks' (line 11); keep one")),
    ("""\
        pipeline: {name: t}
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - name: a
                    kind: sql
                    sql: summary.sql
                    output: {stage: stage3p, source: demo, table: t}
                    destination: {format: delta, path: stage3p/demo/t}
        """, 11, ("step a.destination: the same setting is spelled both ways, 'step a.output' (line 10) and "
                 "'step a.destination' (line 11); keep one")),
    (f"""\
        datasources: {{sis: {{type: jdbc, url: "jdbc:postgresql://db/sis"}}}}
        pipeline:
          name: t
          datasources: {{sis: {{type: jdbc, url: "jdbc:postgresql://db/sis"}}}}
        stages: {ONE_STEP}
        """, 1, ("datasources (top level): the same setting is spelled both ways, 'pipeline.datasources' (line 4) and "
                "'datasources (top level)' (line 1); keep one")),
], ids=["stages", "default_retry.delay", "retry.delay", "checks", "output", "datasources"])
def test_a_setting_spelled_both_ways_is_a_problem_at_its_line(tmp_path, text, line, problem):
    files(tmp_path)
    path = write(tmp_path, text)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert info.value.problems == [f"{path}:{line}: {problem}"]


def test_every_spelling_both_ways_is_reported_at_once(tmp_path):
    files(tmp_path)
    path = write(tmp_path, """\
        pipeline:
          name: t
          default_retry: {delay: 1, delay_seconds: 1}
          stages: []
        stages:
          - name: s
            groups:
              - name: g
                steps:
                  - name: a
                    sql: summary.sql
                    output: {stage: stage3p, source: demo, table: t}
                    destination: {format: delta, path: stage3p/demo/t}
                    checks: []
                    dq_checks: []
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert [p.split(": ")[0:2] for p in info.value.problems] == [
        [f"{path}:4", "pipeline.stages"], [f"{path}:3", "pipeline.default_retry.delay_seconds"],
        [f"{path}:13", "step a.destination"], [f"{path}:15", "step a.dq_checks"]]


def test_reference_format_mistakes_are_problems_with_their_lines(tmp_path):
    files(tmp_path)
    path = write(tmp_path, """\
        pipeline:
          name: t
          checkpoint: {enabled: maybe, path: ../elsewhere}
          datasources:
            sis: {type: odbc, url: "jdbc:postgresql://db/sis", driver: org.postgresql.Driver}
          stages:
            - name: s
              groups:
                - name: g
                  steps:
                    - name: a
                      source: {datasource: crm, table: students}
                      destination: {format: parquet, path: stage3p/demo}
                    - name: b
                      source: {type: delta, table: stage9/demo/t}
                      pre_views: {"bad name": "SELECT 1", ok: ""}
                      destination: {path: stage3p/demo/b}
                    - name: c
                      kind: python
                      callable: oea_testing.flow_helpers:record
                      source: {datasource: sis, table: t}
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    assert info.value.problems == [
        f"{path}:3: pipeline.checkpoint.enabled: must be true or false, not 'maybe'",
        (f"{path}:3: pipeline.checkpoint.path: give the folder of the run logs: absolute, or relative to the lake's "
        "folder (without ..), not '../elsewhere'"),
        f"{path}:5: datasources.sis: type must be jdbc (the only datasource type), not 'odbc'",
        f"{path}:13: step a.destination: format must be delta, not 'parquet'",
        f"{path}:13: step a.destination: path must be <stage>/<source>/<table>, not 'stage3p/demo'",
        f"{path}:12: step a.source: unknown datasource 'crm'; the flow's datasources: sis (under pipeline.datasources)",
        (f"{path}:15: step b.source: give {{datasource: NAME, table: T}} or {{datasource: NAME, query: SQL}} (a "
        "datasource under pipeline.datasources), or {type: delta, table: <stage>/<source>/<table>} (a lake table)"),
        f"{path}:16: step b.pre_views: a view name must be letters, digits and _, once each; not 'bad name'",
        f"{path}:16: step b.pre_views: view ok: give its SELECT as text",
        f"{path}:21: step c.source: source is read by sql steps only, not python steps"]


@pytest.mark.parametrize("setting, line, key", [
    ("password: hunter2-literal", 5, "password"),
    ("user: sis_reader", 5, "user"),
    ("password: {vault: kv, secret: s}", 5, "password"),
])
def test_a_literal_user_or_password_is_refused_with_its_line_and_never_repeated(tmp_path, setting, line, key):
    path = write(tmp_path, f"""\
        pipeline:
          name: t
          datasources:
            sis:
              {setting}
              type: jdbc
              url: "jdbc:postgresql://db/sis"
        stages: {ONE_STEP}
        """)
    with pytest.raises(FlowError) as info:
        load_flow(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:{line}: datasources.sis.{key}: ")
    assert "write ${VARIABLE} or {env: VARIABLE} (an environment variable), or {keyvault: {vault: NAME, " \
           "secret: NAME}}" in problem
    assert "hunter2" not in problem and "sis_reader" not in problem


def test_a_password_in_the_jdbc_url_is_refused(tmp_path):
    path = write(tmp_path, f"""\
        pipeline:
          name: t
          datasources: {{sis: {{type: jdbc, url: "jdbc:sqlserver://db;user=sa;Password=hunter2"}}}}
        stages: {ONE_STEP}
        """)
    with pytest.raises(FlowError, match=r"flow.yaml:3: datasources.sis.url: the URL holds a password; give it as "
                                        r"'password' instead") as info:
        load_flow(path)
    assert "hunter2" not in str(info.value)


def test_user_and_password_references_are_kept_as_references(tmp_path):
    flow = load_flow(write(tmp_path, f"""\
        pipeline:
          name: t
        datasources:
          sis:
            type: jdbc
            url: "jdbc:postgresql://db:5432/sis"
            driver: org.postgresql.Driver
            user: {{env: SIS_USER}}
            password: {{keyvault: {{vault: oea-kv, secret: sis-password}}}}
          crm: {{type: jdbc, url: "jdbc:postgresql://crm/crm", password: "${{CRM_PASSWORD}}"}}
        stages: {ONE_STEP}
        """))
    assert flow.datasources == {
        "sis": Datasource("sis", "jdbc:postgresql://db:5432/sis", Secret(env="SIS_USER"),
                          Secret(vault="oea-kv", secret="sis-password"), "org.postgresql.Driver"),
        "crm": Datasource("crm", "jdbc:postgresql://crm/crm", None, Secret(env="CRM_PASSWORD"))}


def test_jdbc_options_read_the_secrets_now_and_redact_them_from_then_on():
    datasource = Datasource("sis", "jdbc:postgresql://db/sis", Secret(env="SIS_USER"), Secret(env="SIS_PASSWORD"),
                            "org.postgresql.Driver")
    environ = {"SIS_USER": "reader-from-env", "SIS_PASSWORD": PASSWORD}
    assert jdbc_options(datasource, {"table": "students"}, environ) == {
        "url": "jdbc:postgresql://db/sis", "driver": "org.postgresql.Driver", "dbtable": "students",
        "user": "reader-from-env", "password": PASSWORD}
    assert jdbc_options(datasource, {"query": "SELECT 1"}, environ)["query"] == "SELECT 1"
    assert redact(f"login failed for {PASSWORD}") == "login failed for <secret>"
    with pytest.raises(FlowError, match=r"^datasource sis: environment variable SIS_PASSWORD \(its password\) is not "
                                        r"set; set it for the run$"):
        jdbc_options(datasource, {"table": "t"}, {"SIS_USER": "reader-from-env"})


def test_a_keyvault_secret_is_read_with_the_azure_sdk(monkeypatch):
    seen = {}

    class Client:
        def __init__(self, vault_url, credential):
            seen["url"] = vault_url

        def get_secret(self, name):
            seen["secret"] = name
            if name == "missing":
                raise LookupError(f"no secret {name}")
            return type("KeyVaultSecret", (), {"value": "kv-value-0123456789"})()

    modules = {"azure.identity": type("identity", (), {"DefaultAzureCredential": object}),
               "azure.keyvault.secrets": type("secrets", (), {"SecretClient": Client}),
               "azure.core.exceptions": pytest.importorskip("azure.core.exceptions")}
    monkeypatch.setattr(keyvault_module, "require", modules.__getitem__)
    keyvault_module._forget_clients()  # a client cached by another test is not this fake
    datasource = Datasource("sis", "jdbc:postgresql://db/sis", None, Secret(vault="oea-kv", secret="sis-password"))
    assert jdbc_options(datasource, {"table": "t"}, {})["password"] == "kv-value-0123456789"
    assert seen == {"url": "https://oea-kv.vault.azure.net", "secret": "sis-password"}
    assert redact("kv-value-0123456789") == "<secret>"
    missing = Datasource("sis", "jdbc:x", None, Secret(vault="https://kv.example", secret="missing"))
    with pytest.raises(FlowError, match=r"^datasource sis: its password: could not read secret 'missing' in Key "
                                        r"Vault https://kv.example: LookupError; check the vault URL"):
        jdbc_options(missing, {"table": "t"}, {})
    keyvault_module._forget_clients()


JDBC_FLOW = """\
    pipeline:
      name: jdbc
      datasources:
        sis: {type: jdbc, url: "URL", driver: org.postgresql.Driver, user: "${SIS_USER}", password: "${SIS_PASSWORD}"}
      stages:
        - name: s
          groups:
            - name: g
              steps:
                - name: students
                  source: {datasource: sis, query: "SELECT * FROM students WHERE batch = '{{ batch_id }}'"}
                  destination: {format: delta, path: stage1np/sis/students}
    """


class RefusingSpark:
    """Stands in for Spark: records the JDBC reader's options, then fails as a driver that echoes them would."""

    def __init__(self):
        self.seen = {}
        self.sparkContext = self.read = self.conf = self

    def get(self, key, default=None):  # conf.get: no settings, so the delta-rs engine checks the batch was not written
        return default

    def set(self, key, value):  # conf.set: the engine's session settings
        pass

    def setJobGroup(self, *args, **kwargs):
        pass

    cancelJobGroup = setLocalProperty = setJobGroup

    def newSession(self):
        return self

    def format(self, name):
        self.seen["format"] = name
        return self

    def options(self, **options):
        self.seen.update(options)
        return self

    def load(self):
        raise RuntimeError(f"login failed: {self.seen}")


def test_a_password_from_the_environment_is_read_at_run_time_and_never_reaches_the_run_log(tmp_path, lake,
                                                                                           monkeypatch):
    flow = load_flow(write(tmp_path, JDBC_FLOW.replace("URL", "jdbc:postgresql://db.example/sis")))  # nothing set yet
    monkeypatch.setenv("SIS_USER", "reader-from-env")
    monkeypatch.setenv("SIS_PASSWORD", PASSWORD)
    spark = RefusingSpark()
    run = FlowRun(flow, lake, batch_id="j1", spark=spark)
    with pytest.raises(FlowError, match="login failed"):
        run.run()
    assert spark.seen == {"format": "jdbc", "url": "jdbc:postgresql://db.example/sis",
                             "driver": "org.postgresql.Driver", "query": "SELECT * FROM students WHERE batch = 'j1'",
                             "user": "reader-from-env", "password": PASSWORD}
    text = (Path(run.folder) / "run_log.json").read_text()
    assert PASSWORD not in text and "reader-from-env" not in text and "'password': '<secret>'" in text


def test_a_batch_already_written_is_not_read_from_its_datasource_again(tmp_path, lake, monkeypatch):
    import pyarrow as pa
    from deltalake import CommitProperties, Transaction, write_deltalake

    flow = load_flow(write(tmp_path, JDBC_FLOW.replace("URL", "jdbc:postgresql://db.example/sis")))
    monkeypatch.setenv("SIS_USER", "reader-from-env")
    monkeypatch.setenv("SIS_PASSWORD", PASSWORD)
    path = lake.table("stage1np", "sis", "students")  # as the first run of batch j1 left it
    write_deltalake(path, pa.table({"id": [1]}),
                    commit_properties=CommitProperties(app_transactions=[Transaction("oea.flow/jdbc/students/j1", 1)]))
    spark = RefusingSpark()
    FlowRun(flow, lake, batch_id="j1", spark=spark).run()  # a driver that refuses: never asked
    assert spark.seen == {}


def test_a_missing_environment_variable_fails_the_step_naming_the_datasource_and_variable(tmp_path, lake):
    flow = load_flow(write(tmp_path, JDBC_FLOW.replace("URL", "jdbc:postgresql://db.example/sis")))
    with pytest.raises(FlowError) as info:
        FlowRun(flow, lake, batch_id="j2").run()  # fails before Spark is needed
    log = json.loads((Path(lake.state_path("runs", "j2")) / "run_log.json").read_text())
    assert log["steps"]["students"]["error"] == ("FlowError: datasource sis: environment variable SIS_USER (its user) "
                                                 "is not set; set it for the run")
    assert "students: FlowError: datasource sis: environment variable SIS_USER" in str(info.value)


CHECKPOINTED = f"""\
    pipeline:
      name: cp
      checkpoint: {{enabled: true, path: PATH}}
    stages: {ONE_STEP}
    """


@pytest.mark.parametrize("relative", [True, False])
def test_the_checkpoint_path_is_where_run_logs_are_written_and_resumed_from(tmp_path, lake, relative):
    folder = "flow_runs/cp" if relative else str(tmp_path / "elsewhere")
    flow = load_flow(write(tmp_path, CHECKPOINTED.replace("PATH", folder)))
    assert flow.checkpoint and flow.checkpoint_path == folder
    first = FlowRun(flow, lake, batch_id="c1")
    first.run()
    expected = Path(lake.root) / folder if relative else Path(folder)
    assert Path(first.folder) == expected / "c1" and (expected / "c1" / "run_log.json").is_file()
    assert not Path(lake.state_path("runs", "c1")).exists()
    assert statuses(FlowRun(flow, lake, batch_id="c1").run()) == {"a": "cached"}


def test_a_checkpoint_path_on_a_cloud_lake_is_refused(tmp_path):
    flow = load_flow(write(tmp_path, CHECKPOINTED.replace("PATH", "flow_runs")))
    lake = LakePaths.from_setting("abfss://stage1np@oeaexample.dfs.core.windows.net")
    with pytest.raises(FlowError, match=r"^checkpoint.path 'flow_runs' is for a local lake; storage account "
                                        r"'oeaexample' keeps its run logs in oea-framework/runs"):
        FlowRun(flow, lake, batch_id="c1")


class TeamsReceiver(BaseHTTPRequestHandler):
    received: typing.ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        TeamsReceiver.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_teams_notification_posts_a_card_over_https(tmp_path, lake, monkeypatch):
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    server = ThreadingHTTPServer(("127.0.0.1", 0), TeamsReceiver)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        flow = load_flow(write(tmp_path, f"""\
            pipeline:
              name: teams
              notifications: {{on_success: "teams://127.0.0.1:{port}/webhookb2/TOKEN-s3cr3t"}}
              stages: {ONE_STEP}
            """))
        log = FlowRun(flow, lake, batch_id="t1").run()
    finally:
        server.shutdown()
    ((path, card),) = TeamsReceiver.received
    assert path == "/webhookb2/TOKEN-s3cr3t"
    assert card["@type"] == "MessageCard" and card["title"] == "flow teams batch t1: success"
    assert {"name": "a", "value": "success"} in card["sections"][0]["facts"]
    assert log["notifications"] == [{"event": "on_success", "kind": "teams", "target": f"https://127.0.0.1:{port}/…",
                                     "ok": True, "error": None}]


@pytest.mark.spark
def test_a_reference_sql_step_reads_its_source_registers_pre_views_and_writes_its_destination(tmp_path, lake, spark):
    from oea_core.delta import delta_store

    store = delta_store(spark)
    visits = spark.createDataFrame([("A", 1), ("A", 2), ("B", 3), (None, 4)], "school string, n int")
    store.write(visits, lake.table("stage2p", "demo", "visits"))
    store.write(spark.createDataFrame([("A",), ("B",)], "school string"), lake.table("stage2p", "demo", "schools"))
    files(tmp_path)
    (tmp_path / "big.sql").write_text("SELECT school, count(*) AS n FROM big GROUP BY school\n")
    flow = load_flow(write(tmp_path, """\
        pipeline:
          name: ref
          stages:
            - name: copy
              groups:
                - name: copies
                  parallel: true                # each step's `source` view is its own
                  steps:
                    - name: copy_visits
                      source: {type: delta, table: stage2p/demo/visits}
                      destination: {format: delta, path: stage3p/demo/visits_copy}
                    - name: copy_schools
                      source: {type: delta, table: stage2p/demo/schools}
                      destination: {format: delta, path: stage3p/demo/schools_copy}
            - name: report
              groups:
                - name: g
                  steps:
                    - name: summarise
                      source: {type: delta, table: stage3p/demo/visits_copy}
                      pre_views:
                        - {name: known, sql: "SELECT * FROM source WHERE school IS NOT NULL"}
                        - {name: big, sql: "SELECT * FROM known WHERE n > 1"}
                      sql: big.sql
                      destination: {format: delta, path: stage3p/demo/summary}
                      dq_checks: [dq/no_empty_school.sql]
        """))
    log = FlowRun(flow, lake, batch_id="r1", spark=spark).run()
    assert statuses(log) == {"copy_visits": "success", "copy_schools": "success", "summarise": "success"}
    assert log["steps"]["copy_visits"]["rows"] == 4 and log["steps"]["copy_schools"]["rows"] == 2
    assert store.read(lake.table("stage3p", "demo", "schools_copy")).columns == ["school"]
    assert log["steps"]["summarise"]["checks"] == [{"name": "no_empty_school", "severity": "error", "value": 0,
                                                   "max": 0, "passed": True}]
    summary = store.read(lake.table("stage3p", "demo", "summary"))
    assert sorted((r["school"], r["n"]) for r in summary.collect()) == [("A", 1), ("B", 1)]


@pytest.mark.spark
def test_a_jdbc_source_reaches_sparks_jdbc_reader_and_its_password_stays_out_of_the_run_log(tmp_path, lake, spark,
                                                                                            monkeypatch):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SIS_USER", "reader-from-env")
    monkeypatch.setenv("SIS_PASSWORD", PASSWORD)
    flow = load_flow(write(tmp_path, JDBC_FLOW.replace("URL", f"jdbc:postgresql://127.0.0.1:{port}/sis")))
    run = FlowRun(flow, lake, batch_id="j3", spark=spark)
    with pytest.raises(FlowError, match=f"Connection to 127.0.0.1:{port} refused"):
        run.run()
    assert PASSWORD not in (Path(run.folder) / "run_log.json").read_text()


def test_the_reference_example_in_the_docs_loads(tmp_path):
    guide = (Path(__file__).resolve().parents[2] / "docs" / "flows.md").read_text(encoding="utf-8")
    section = guide.split("## The reference format", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "enrollment_summary.sql").write_text("SELECT * FROM by_school\n")
    (tmp_path / "dq").mkdir()
    (tmp_path / "dq" / "no_negative_counts.sql").write_text("SELECT * FROM {{ output }} WHERE students < 0\n")
    flow = load_flow(write(tmp_path, example))
    assert list(flow.steps) == ["sis_students", "sis_enrollments", "enrollment_summary"]
    assert {s.kind for s in flow.steps.values()} == {"sql"} and flow.steps["sis_students"].target == ""
    assert flow.steps["enrollment_summary"].depends_on == {"sis_students", "sis_enrollments"}
    assert list(flow.steps["enrollment_summary"].pre_views) == ["current", "by_school"]
    assert flow.checkpoint_path == "flow_runs/sis" and flow.retry.delay == 60.0
    assert flow.datasources["sis"].password == Secret(vault="oea-kv", secret="sis-password")
    assert flow.notifications["on_failure"] == {"teams": "https://contoso.webhook.office.com/webhookb2/..."}
