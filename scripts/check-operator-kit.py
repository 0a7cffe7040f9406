#!/usr/bin/env python3
"""Checks the operator's kit beyond what promtool tests (run by .ci/run).

- deploy/kubernetes/prometheusrule.yaml is alerts.yaml's groups in a
  PrometheusRule, byte for byte as this script writes it (`--write`
  writes it again after alerts.yaml changed);
- it and deploy/kubernetes/servicemonitor.yaml are valid against the
  Prometheus Operator's types (the models of cloudcoil-models-prometheus-
  operator, from PyPI): required fields, types and patterns, and no key
  the type does not have;
- every alert has a severity label, a summary, a description and a
  runbook_url whose anchor is a heading of docs/operations.md;
- every alert has, in alerts_test.yaml, a case where it fires and one
  where it stays quiet;
- every query of deploy/grafana/importer.json is valid PromQL: with
  Grafana's variables filled in, they are written as recording rules to a
  temporary file that `promtool check rules` reads.

That each metric name the dashboard and the rules use is one the importer
exports is checked by tests/operator_kit.rs (cargo test).

Needs PyYAML and cloudcoil-models-prometheus-operator, and promtool.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from cloudcoil.models.prometheus_operator.v1 import PrometheusRule, ServiceMonitor

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy/prometheus/alerts.yaml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yaml"
RULE = ROOT / "deploy/kubernetes/prometheusrule.yaml"
SERVICE_MONITOR = ROOT / "deploy/kubernetes/servicemonitor.yaml"
DASHBOARD = ROOT / "deploy/grafana/importer.json"
OPERATIONS = ROOT / "docs/operations.md"
RUNBOOK_BASE = "https://github.com/ometria/ometria-importer/blob/main/docs/operations.md#"

RULE_HEADER = """\
# The alert rules of deploy/prometheus/alerts.yaml for the Prometheus
# Operator: its Prometheus loads every PrometheusRule its ruleSelector
# matches (add the labels yours selects, e.g. `release: <your release>`
# for kube-prometheus-stack). Written by `python3
# scripts/check-operator-kit.py --write` from alerts.yaml, never by hand;
# CI checks the two are equal. What each alert means and what to do:
# docs/operations.md#runbook.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ometria-importer
  labels:
    app.kubernetes.io/name: ometria-importer
spec:
"""

problems = []


def problem(text):
    problems.append(text)


def rule_text():
    """prometheusrule.yaml as it must be: the header, then alerts.yaml from
    its `groups:` line on, indented under `spec:`."""
    lines = ALERTS.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(("  " + line if line else "") + "\n" for line in lines[start:])
    return RULE_HEADER + body


def check_model(path, model):
    """`path` holds one object of the Prometheus Operator type `model`: it
    validates, and reads back as it was written (no unknown key dropped)."""
    document = yaml.safe_load(path.read_text())
    try:
        parsed = model.model_validate(document)
    except Exception as error:  # pydantic's ValidationError says where
        problem(f"{path.relative_to(ROOT)}: not a valid {model.__name__}: {error}")
        return None
    back = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if back != document:
        problem(f"{path.relative_to(ROOT)}: keys a {model.__name__} does not have: {unknown_keys(document, back)}")
    return document


def unknown_keys(written, read, at=""):
    """The paths of keys in `written` that `read` lost."""
    if isinstance(written, dict) and isinstance(read, dict):
        out = []
        for key, value in written.items():
            if key not in read:
                out.append(f"{at}.{key}")
            else:
                out.extend(unknown_keys(value, read[key], f"{at}.{key}"))
        return out
    if isinstance(written, list) and isinstance(read, list):
        return [k for i, (w, r) in enumerate(zip(written, read)) for k in unknown_keys(w, r, f"{at}[{i}]")]
    return []


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def check_alerts(alerts):
    anchors = {
        slug(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    names = []
    for group in alerts["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert")
            if name is None:
                continue
            names.append(name)
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problem(f"{name}: no severity label (critical, warning or info)")
            annotations = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not annotations.get(key):
                    problem(f"{name}: no {key} annotation")
            url = annotations.get("runbook_url", "")
            if not url.startswith(RUNBOOK_BASE):
                problem(f"{name}: runbook_url {url!r} does not point into docs/operations.md")
            elif url[len(RUNBOOK_BASE):] not in anchors:
                problem(f"{name}: docs/operations.md has no heading for the anchor of {url!r}")
            elif url[len(RUNBOOK_BASE):] != name.lower():
                problem(f"{name}: its runbook_url should end in #{name.lower()}")
    if len(set(names)) != len(names):
        problem(f"alert names used twice: {names}")
    return names


def check_tests(names):
    fires, quiet = set(), set()
    for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    for name in names:
        if name not in fires:
            problem(f"{name}: alerts_test.yaml has no case where it fires")
        if name not in quiet:
            problem(f"{name}: alerts_test.yaml has no case where it stays quiet")
    for name in (fires | quiet) - set(names):
        problem(f"alerts_test.yaml tests {name}, which alerts.yaml does not have")


def dashboard_queries(dashboard):
    """Every PromQL query of the dashboard: panel targets (also inside
    collapsed rows) and query variables."""
    queries = []

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                queries.append((f"panel {panel.get('title')!r}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            query = query.get("query") if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query.strip())
            queries.append((f"variable {variable['name']!r}", match.group(1) if match else query))
    return queries


def check_dashboard():
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as error:
        problem(f"deploy/grafana/importer.json is not JSON: {error}")
        return
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        problem("the dashboard has no datasource variable")
    ids = [p["id"] for p in dashboard.get("panels", [])]
    if len(set(ids)) != len(ids):
        problem("panel ids used twice")
    for panel in dashboard.get("panels", []):
        if panel.get("type") != "row" and panel.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"panel {panel.get('title')!r} does not use the ${{datasource}} variable")
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$list_id": ".*"}
    rules = []
    for i, (where, expr) in enumerate(dashboard_queries(dashboard)):
        for variable, value in fill.items():
            expr = expr.replace(variable, value)
        if "$" in expr:
            problem(f"{where}: a variable this check does not fill in: {expr}")
            continue
        rules.append({"record": f"dashboard_query_{i}", "expr": expr, "labels": {"where": where}})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, file)
        file.flush()
        checked = subprocess.run(["promtool", "check", "rules", file.name], capture_output=True, text=True)
        if checked.returncode != 0:
            problem("the dashboard's queries are not all valid PromQL:\n" + checked.stdout + checked.stderr)
        else:
            print(f"ok: the dashboard's {len(rules)} queries are valid PromQL")


def main():
    if sys.argv[1:] == ["--write"]:
        RULE.write_text(rule_text())
        print(f"wrote {RULE.relative_to(ROOT)}")
    elif sys.argv[1:]:
        sys.exit("usage: check-operator-kit.py [--write]")
    if RULE.read_text() != rule_text():
        problem("deploy/kubernetes/prometheusrule.yaml differs from alerts.yaml: run python3 scripts/check-operator-kit.py --write")
    alerts = yaml.safe_load(ALERTS.read_text())
    rule = check_model(RULE, PrometheusRule)
    if rule is not None and rule["spec"] != alerts:
        problem("deploy/kubernetes/prometheusrule.yaml: its spec is not alerts.yaml")
    check_model(SERVICE_MONITOR, ServiceMonitor)
    names = check_alerts(alerts)
    check_tests(names)
    check_dashboard()
    for text in problems:
        print(f"error: {text}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"ok: {len(names)} alerts, each with its runbook section and a firing and a quiet test; "
          "prometheusrule.yaml equals alerts.yaml; the PrometheusRule and ServiceMonitor are valid")


if __name__ == "__main__":
    main()
