"""Packaging checks: systemd units, example configurations and the Helm chart.

These files are not imported by anything, so nothing else notices when they drift from
the code: a renamed configuration key, a changed default, a console script renamed in
pyproject.toml. Every test here ties a packaging file back to the code it describes
(the real configuration loader and dataclasses, [project.scripts]).
"""

from __future__ import annotations

import configparser
import dataclasses
import re
import shutil
import subprocess
import tomllib
import typing
from pathlib import Path

import pytest

from dr_common.config import load
from dr_common.errors import InvalidArgument
from dr_control.config import ControlConfig
from dr_node.config import NodeConfig

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "packaging" / "systemd"
CHART = ROOT / "helm" / "hybrid-dr"
TEMPLATES = CHART / "templates"

# daemon -> (config class, environment prefix, example config, unit file)
DAEMONS = {
    "dr-control": (ControlConfig, "DR_CONTROL_", SYSTEMD / "control.toml",
                   SYSTEMD / "dr-control.service"),
    "dr-node": (NodeConfig, "DR_NODE_", SYSTEMD / "node.toml", SYSTEMD / "dr-node.service"),
}

HARDENING = {
    "User": "hybrid-dr",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "LogsDirectory": "hybrid-dr",
    "Restart": "on-failure",
    "KillSignal": "SIGTERM",
    "TimeoutStopSec": "60",
}
STATE_DIRECTORY = {"dr-control": "hybrid-dr/control", "dr-node": "hybrid-dr"}


def _yaml():
    return pytest.importorskip(
        "yaml", reason="PyYAML is not installed in this environment: the YAML parsing "
                       "checks of the Helm chart cannot run (add pyyaml to the test extra)")


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str  # systemd keys are case-sensitive
    with open(path, encoding="utf-8") as f:
        parser.read_file(f)
    return parser


def _fields(cls: type, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], typing.Any]:
    """Every leaf field of a configuration dataclass, by its path of section names."""
    out: dict[tuple[str, ...], typing.Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_fields(tp, (*path, f.name)))
        else:
            out[(*path, f.name)] = tp
    return out


def _env_names(cls: type, prefix: str) -> dict[str, tuple[str, ...]]:
    """Environment variable name -> field path, as dr_common.config.load reads them."""
    return {prefix + "__".join(p).upper(): p for p in _fields(cls)}


def _flatten(table: dict, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], typing.Any]:
    out: dict[tuple[str, ...], typing.Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, (*path, key)))
        else:
            out[(*path, key)] = value
    return out


# --- systemd units --------------------------------------------------------------------

@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_unit_has_hardening_directives(daemon):
    unit_path = DAEMONS[daemon][3]
    unit = _unit(unit_path)
    assert unit.has_section("Unit") and unit.has_section("Install")
    service = unit["Service"]
    for key, expected in {**HARDENING, "StateDirectory": STATE_DIRECTORY[daemon]}.items():
        assert service.get(key) == expected, (
            f"{unit_path.name}: [Service] {key}= must be {expected!r}, "
            f"found {service.get(key)!r}")
    assert unit["Install"].get("WantedBy") == "multi-user.target"


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_unit_execstart_is_a_console_script(daemon):
    scripts = _pyproject()["project"]["scripts"]
    cls, _prefix, example, unit_path = DAEMONS[daemon]
    argv = _unit(unit_path)["Service"]["ExecStart"].split()
    assert argv[0] == f"/usr/bin/{daemon}", f"{unit_path.name}: ExecStart runs {argv[0]}"
    assert Path(argv[0]).name in scripts, (
        f"{unit_path.name}: {Path(argv[0]).name} is not in [project.scripts] "
        f"({', '.join(sorted(scripts))})")
    # The config file installed under /etc is the example beside the unit.
    assert argv[1:] == ["--config", f"/etc/hybrid-dr/{example.name}"]
    # The entry point exists and accepts --config (argparse exits 0 on --help).
    module, _, func = scripts[daemon].partition(":")
    main = getattr(__import__(module, fromlist=[func]), func)
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_unit_makes_state_and_file_roots_writable(daemon):
    """Under ProtectSystem=strict only StateDirectory/ReadWritePaths are writable."""
    cls, _prefix, example, unit_path = DAEMONS[daemon]
    service = _unit(unit_path)["Service"]
    writable = [Path("/var/lib") / service["StateDirectory"]]
    writable += [Path(p.lstrip("-")) for p in service.get("ReadWritePaths", "").split()]
    cfg = load(cls, example, env_prefix="UNUSED_", environ={})

    def covered(path: str) -> bool:
        return any(Path(path).is_relative_to(w) for w in writable)

    if cls is ControlConfig:
        assert covered(cfg.state_dir), (
            f"{unit_path.name}: state_dir {cfg.state_dir} is not writable by the unit")
        assert Path(cfg.state_dir) == Path("/var/lib") / service["StateDirectory"]
    else:
        for root in cfg.file_roots:
            assert covered(root), f"{unit_path.name}: file root {root} is not writable"


def test_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH")
    units = [DAEMONS[d][3] for d in sorted(DAEMONS)]
    result = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True,
                            text=True, timeout=60)
    # The daemons are not installed in /usr/bin here; anything else is a real problem
    # (unknown key, bad value), which systemd only warns about and then ignores.
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if any(u.name in line for u in units) and "is not executable" not in line]
    assert not problems, "\n".join(problems)


# --- example configurations -------------------------------------------------------------

@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_example_config_loads_with_every_key_at_its_default(daemon):
    cls, prefix, example, _unit_path = DAEMONS[daemon]
    cfg = load(cls, example, env_prefix=prefix, environ={})
    # The examples say "every key, with its default": keep them true.
    assert cfg == cls(), f"{example.name} differs from the defaults in {cls.__module__}"
    with open(example, "rb") as f:
        present = set(_flatten(tomllib.load(f)))
    missing = set(_fields(cls)) - present
    assert not missing, f"{example.name} lacks key(s) {sorted('.'.join(m) for m in missing)}"


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_example_config_keys_are_commented(daemon):
    example = DAEMONS[daemon][2]
    # Paragraphs (blocks between blank lines) that set a key must explain it.
    for block in re.split(r"\n\s*\n", example.read_text()):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        keys = [ln for ln in lines if re.match(r"^[a-z_]+\s*=", ln)]
        if keys:
            assert any(ln.startswith("#") for ln in lines), (
                f"{example.name}: no comment for {keys}")


def test_loader_rejects_unknown_keys(tmp_path):
    """The example tests above rely on the loader refusing keys it does not know."""
    bad = tmp_path / "bad.toml"
    bad.write_text((SYSTEMD / "node.toml").read_text() + "\nno_such_key = 1\n")
    with pytest.raises(InvalidArgument, match="no_such_key"):
        load(NodeConfig, bad, env_prefix="DR_NODE_", environ={})


# --- Helm chart: text checks (no YAML parser or helm needed) ----------------------------

ENV_NAME = re.compile(r"-\s*name:\s*[\"']?((?:DR_CONTROL|DR_NODE)_[A-Z0-9_]+)")
ENV_FROM_VALUES = re.compile(
    r"-\s*name:\s*((?:DR_CONTROL|DR_NODE)_[A-Z0-9_]+)\s*\n\s*value:\s*\{\{-?\s*"
    r"(?:join\s+\"[^\"]*\"\s+)?\.Values\.(control|node)\.config\.([A-Za-z0-9_.]+)")
# Set by the chart itself (addresses, ports, paths tied to mounts), not from `config:`.
CHART_OWNED = {"DR_CONTROL_LISTEN", "DR_CONTROL_STATE_DIR", "DR_CONTROL_METRICS_HOST",
               "DR_CONTROL_METRICS_PORT", "DR_NODE_CONTROL", "DR_NODE_METRICS_HOST",
               "DR_NODE_METRICS_PORT", "DR_CONTROL_SECRET_KEY_FILE",
               # TLS files: paths of the mounted tls Secret (control.tls, node.tls).
               "DR_CONTROL_TLS_CERT_FILE", "DR_CONTROL_TLS_KEY_FILE",
               "DR_CONTROL_TLS_CLIENT_CA_FILE", "DR_NODE_TLS_CA_FILE", "DR_NODE_TLS_CERT_FILE",
               "DR_NODE_TLS_KEY_FILE",
               # From the chart's ports: control.rest.port, node.transfer.port (the
               # advertised address is the pod IP) and node.site beside them.
               "DR_CONTROL_REST_LISTEN", "DR_NODE_TRANSFER__LISTEN",
               "DR_NODE_TRANSFER__ADVERTISE", "DR_NODE_SITE"}
# Deliberately not set by this minimal chart (node ids come from the pod's host name).
NOT_IN_CHART = {"DR_NODE_NODE_ID"}
# Set from a Secret named in values (they hold passwords), not from `config:`.
FROM_SECRET = {"DR_CONTROL_DATABASE_URL": ("control.database.existingSecret",
                                           "control.database.secretKey")}


def _template_env_names() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for tpl in sorted(TEMPLATES.glob("*")):
        for name in ENV_NAME.findall(tpl.read_text()):
            found.setdefault(name, set()).add(tpl.name)
    return found


def test_helm_env_vars_are_real_config_fields():
    real = {**_env_names(ControlConfig, "DR_CONTROL_"), **_env_names(NodeConfig, "DR_NODE_")}
    used = _template_env_names()
    assert used, "no DR_CONTROL_*/DR_NODE_* variables found in helm templates"
    unknown = {name: sorted(files) for name, files in used.items() if name not in real}
    assert not unknown, f"environment variables that set no configuration field: {unknown}"
    # Each daemon's variables are in its own Deployment.
    for name, files in used.items():
        want = "control" if name.startswith("DR_CONTROL_") else "node"
        assert all(f.startswith(want) for f in files), f"{name} used in {sorted(files)}"


def test_helm_env_vars_cover_every_config_field():
    used = set(_template_env_names())
    for cls, prefix in ((ControlConfig, "DR_CONTROL_"), (NodeConfig, "DR_NODE_")):
        missing = set(_env_names(cls, prefix)) - used - NOT_IN_CHART
        assert not missing, f"config fields the chart does not set: {sorted(missing)}"


def test_helm_env_values_come_from_the_matching_config_key():
    """DR_NODE_ENGINE__BUDGET_BYTES must take .Values.node.config.engine.budget_bytes."""
    pairs = []
    for tpl in sorted(TEMPLATES.glob("*-deployment.yaml")):
        pairs += ENV_FROM_VALUES.findall(tpl.read_text())
    mapped = {name for name, _c, _p in pairs}
    assert mapped == set(_template_env_names()) - CHART_OWNED - set(FROM_SECRET), (
        "every variable not owned by the chart must be set from its `config:` key")
    for name, component, path in pairs:
        expected = f"DR_{component.upper()}_" + "__".join(path.split(".")).upper()
        assert name == expected, f"{name} is set from .Values.{component}.config.{path}"


def test_helm_secret_env_vars_come_from_a_named_secret():
    """DR_CONTROL_DATABASE_URL: only when a Secret is named, by secretKeyRef, never a
    plain value (the URL holds the database password)."""
    control = (TEMPLATES / "control-deployment.yaml").read_text()
    for name, (secret, key) in FROM_SECRET.items():
        m = re.search(r"\{\{-?\s*if\s+\.Values\." + re.escape(secret) + r"\s*\}\}\s*\n"
                      r"(?:\s*#.*\n)*\s*-\s*name:\s*" + name + r"\s*\n\s*valueFrom:\s*\n"
                      r"\s*secretKeyRef:\s*\n\s*name:\s*\{\{\s*\.Values\." + re.escape(secret)
                      + r"\s*\|\s*quote\s*\}\}\s*\n\s*key:\s*\{\{\s*\.Values\."
                      + re.escape(key) + r"\s*\|\s*quote\s*\}\}", control)
        assert m, f"{name} is not set from the Secret .Values.{secret} (key .Values.{key})"


def test_helm_probes():
    control = (TEMPLATES / "control-deployment.yaml").read_text()
    node = (TEMPLATES / "node-deployment.yaml").read_text()
    for probe in ("readinessProbe", "livenessProbe"):
        assert re.search(probe + r":\s*\n\s*grpc:\s*\n\s*port:\s*\{\{\s*\.Values\.control"
                         r"\.grpcPort\s*\}\}", control), f"control {probe} is not gRPC"
        assert re.search(probe + r":\s*\n\s*httpGet:\s*\n\s*path:\s*/metrics", node), (
            f"node {probe} is not an httpGet on /metrics")


def test_helm_rest_and_transfer_ports():
    """REST/UI: rest_listen and the Service port from control.rest.port (0: off).
    Transfer: listen, advertise (pod IP), container port and headless Service from
    node.transfer.port (0: off)."""
    control = (TEMPLATES / "control-deployment.yaml").read_text()
    service = (TEMPLATES / "control-service.yaml").read_text()
    node = (TEMPLATES / "node-deployment.yaml").read_text()
    transfer = (TEMPLATES / "node-transfer-service.yaml").read_text()
    assert re.search(r"name: DR_CONTROL_REST_LISTEN\s*\n\s*value: \{\{ if \.Values\.control\.rest"
                     r"\.port \}\}\{\{ printf \"0\.0\.0\.0:%d\" \(int \.Values\.control\.rest"
                     r"\.port\) \| quote \}\}\{\{ else \}\}\"\"\{\{ end \}\}", control)
    for text in (control, service):
        assert re.search(r"\{\{- if \.Values\.control\.rest\.port \}\}\s*\n(?:\s*#.*\n)?"
                         r"\s*- name: http\s*\n\s*(?:containerPort|port): \{\{ \.Values\.control"
                         r"\.rest\.port \}\}", text)
    assert re.search(r"name: DR_NODE_TRANSFER__LISTEN\s*\n\s*value: \{\{ printf \"0\.0\.0\.0:%d\" "
                     r"\(int \.Values\.node\.transfer\.port\)", node)
    assert "$(POD_IP)" in node and "fieldPath: status.podIP" in node
    assert node.index("name: POD_IP") < node.index("name: DR_NODE_TRANSFER__ADVERTISE"), (
        "Kubernetes expands $(POD_IP) only from variables defined before it")
    assert re.search(r"- name: transfer\s*\n\s*containerPort: \{\{ \.Values\.node\.transfer"
                     r"\.port \}\}", node)
    assert transfer.startswith("{{- /*") and "{{- if .Values.node.transfer.port }}" in transfer
    assert "clusterIP: None" in transfer and "targetPort: transfer" in transfer


def test_helm_chart_says_what_comes_later():
    values = (CHART / "values.yaml").read_text()
    notes = (TEMPLATES / "NOTES.txt").read_text()
    for word in ("PostgreSQL", "TLS", "monitoring.enabled"):
        assert word in values, f"values.yaml comment does not mention {word}"
        assert word in notes, f"NOTES.txt does not mention {word}"


def test_helm_monitoring_scrapes_both_daemons_metrics_ports():
    text = (TEMPLATES / "monitoring.yaml").read_text()
    assert text.startswith("{{- if .Values.monitoring.enabled }}")
    assert "kind: ServiceMonitor" in text and "kind: PodMonitor" in text
    assert text.count("- port: metrics") == 2 and "podMetricsEndpoints:\n    - port: metrics" in text
    assert '"component" "control"' in text and '"component" "node"' in text


# --- Helm chart: YAML checks ------------------------------------------------------------

def test_chart_yaml():
    yaml = _yaml()
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "hybrid-dr" == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"] == _pyproject()["project"]["version"], (
        "Chart.yaml appVersion must be the package version in pyproject.toml")


def test_values_yaml():
    yaml = _yaml()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["image"]) >= {"repository", "tag", "pullPolicy"}
    assert isinstance(values["node"]["replicas"], int)
    assert values["control"]["grpcPort"] == 50051
    assert values["control"]["metricsPort"] == 9464
    assert values["node"]["metricsPort"] == 9465
    assert values["control"]["rest"]["port"] == 8080
    assert values["node"]["transfer"]["port"] == 0 and values["node"]["site"] == ""
    for component, cls, prefix in (("control", ControlConfig, "DR_CONTROL_"),
                                   ("node", NodeConfig, "DR_NODE_")):
        config = values[component]["config"]
        fields = _fields(cls)
        unknown = set(_flatten(config)) - set(fields)
        assert not unknown, f"{component}.config has unknown key(s) {sorted(unknown)}"
        # Feed the values through the real loader, as the templates do: env vars,
        # lists comma-separated. A wrong type (a float for an int) fails here.
        environ = {prefix + "__".join(path).upper():
                   ",".join(v) if isinstance(v, list) else str(v)
                   for path, v in _flatten(config).items()}
        cfg = load(cls, None, env_prefix=prefix, environ=environ)
        for path, v in _flatten(config).items():
            got = cfg
            for part in path:
                got = getattr(got, part)
            assert got == v, f"{component}.config.{'.'.join(path)}: {v!r} loads as {got!r}"


def test_template_value_references_exist():
    yaml = _yaml()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    refs = set()
    for tpl in TEMPLATES.glob("*"):
        refs |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", tpl.read_text()))
    assert refs
    for ref in sorted(refs):
        node = values
        for part in ref.rstrip(".").split("."):
            assert isinstance(node, dict) and part in node, f".Values.{ref} is not in values.yaml"
            node = node[part]


# --- Helm chart: yamllint ---------------------------------------------------------------

YAMLLINT_CONFIG = ROOT / "helm" / ".yamllint"
YAMLLINT_TEMPLATES_CONFIG = ROOT / "helm" / "templates.yamllint"
# A whole Go template action; none of the YAML templates has one spanning lines.
TEMPLATE_ACTION = re.compile(r"\{\{(?:(?!\}\}).)*\}\}", re.S)
# Templates that are not YAML even with their actions replaced (name -> why): none yet.
# A template that fails to parse and is not listed here fails the test.
NOT_YAML_WITHOUT_ACTIONS: dict[str, str] = {}


def _yamllint(text: str, config: Path, name: str) -> list:
    from yamllint import linter
    from yamllint.config import YamlLintConfig
    return list(linter.run(text, YamlLintConfig(file=str(config)), name))


def _without_actions(template: str) -> tuple[str, list[int]]:
    """The template with every {{ ... }} action replaced by a placeholder scalar and the
    lines holding only actions ({{- if }}, {{- end }}, {{- include ... | nindent }})
    removed; and, for each line kept, its line number in the template."""
    kept: list[tuple[int, str]] = []
    for number, line in enumerate(template.splitlines(), 1):
        rest = TEMPLATE_ACTION.sub("", line)
        assert "{{" not in rest and "}}" not in rest, (
            f"line {number}: an action spanning lines: {line!r}")
        if rest.strip() or not TEMPLATE_ACTION.search(line):
            kept.append((number, TEMPLATE_ACTION.sub("TPL", line)))
    return "".join(line + "\n" for _, line in kept), [number for number, _ in kept]


def test_yamllint_chart_and_values():
    """Chart.yaml and values.yaml are plain YAML: yamllint's defaults, as helm/.yamllint
    states them (100-character lines, no "---" required), warnings included."""
    problems = []
    for path in (CHART / "Chart.yaml", CHART / "values.yaml"):
        problems += [f"{path.relative_to(ROOT)}:{p.line}:{p.column}: [{p.level}] {p.desc} "
                     f"({p.rule})" for p in _yamllint(path.read_text(), YAMLLINT_CONFIG, path.name)]
    assert not problems, "\n".join(problems)


def test_yamllint_templates():
    """yamllint (helm/templates.yamllint) on the chart's templates.

    With a real helm on PATH: on `helm template` output, with the default values and with
    every optional part switched on. With or without one (helm is in no package registry
    this project can use; a renderer written for the test would be a second, fragile
    Helm), each template is also linted as it is written: every {{ ... }} action
    replaced by a placeholder scalar and the lines holding only actions removed. The
    templates are written so that this is YAML with the indentation of the output (an
    `if`'s lines are indented as the rendered lines are, `nindent` blocks stand on
    lines of their own), so indentation, duplicated keys, syntax, trailing spaces and
    line lengths are still checked; what the actions render is not (that is for the
    helm lint test, and test_helm_env_* above check the env entries)."""
    helm = shutil.which("helm")
    problems: list[str] = []
    if helm is not None:
        for extra in ([], ["--set", "control.tls.existingSecret=tls",
                           "--set", "node.tls.existingSecret=tls",
                           "--set", "control.database.existingSecret=db",
                           "--set", "control.secretKey.existingSecret=key",
                           "--set", "node.transfer.port=50061", "--set", "node.site=dr"]):
            out = subprocess.run([helm, "template", "t", str(CHART), *extra],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            problems += [f"helm template {' '.join(extra)}: line {p.line}: [{p.level}] "
                         f"{p.desc} ({p.rule}): {out.stdout.splitlines()[p.line - 1]!r}"
                         for p in _yamllint(out.stdout, YAMLLINT_TEMPLATES_CONFIG, "rendered")]
        assert not problems, "\n".join(problems)
    yaml = _yaml()
    templates = sorted(TEMPLATES.glob("*.yaml"))
    assert len(templates) >= 5
    for tpl in templates:
        text, numbers = _without_actions(tpl.read_text())
        try:
            list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            if tpl.name in NOT_YAML_WITHOUT_ACTIONS:
                continue
            pytest.fail(f"{tpl.name} is not YAML with its actions replaced: {exc}")
        assert tpl.name not in NOT_YAML_WITHOUT_ACTIONS, (
            f"{tpl.name} is YAML now: lint it (remove it from NOT_YAML_WITHOUT_ACTIONS)")
        problems += [f"{tpl.relative_to(ROOT)}:{numbers[min(p.line, len(numbers)) - 1]}: "
                     f"[{p.level}] {p.desc} ({p.rule})"
                     for p in _yamllint(text, YAMLLINT_TEMPLATES_CONFIG, tpl.name)]
    assert not problems, "\n".join(problems)


def test_helm_lint_and_template(tmp_path):
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm is not on PATH: `helm lint` and `helm template` not run")
    lint = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True,
                          text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for extra in ([], ["--set", "control.persistence.enabled=false",
                       "--set", "node.data.existingClaim=dr-data",
                       "--set", "node.transfer.port=50061"]):
        out = subprocess.run([helm, "template", "t", str(CHART), *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        try:
            import yaml
        except ImportError:
            continue
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        kinds = sorted(d["kind"] for d in docs)
        expected = ["Deployment", "Deployment", "Service", "Service"]
        if not extra:
            expected = ["Deployment", "Deployment", "PersistentVolumeClaim", "Service"]
        assert kinds == expected
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            env = {e["name"]: e.get("value")
                   for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            cls, prefix = ((ControlConfig, "DR_CONTROL_") if "DR_CONTROL_LISTEN" in env
                           else (NodeConfig, "DR_NODE_"))
            load(cls, None, env_prefix=prefix, environ=env)  # values parse as their types
