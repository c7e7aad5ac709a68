"""The real tools the deploy kit is checked with, and the metric names it refers to.

``promtool`` and ``prometheus`` come from the Debian package ``prometheus``,
``systemd-analyze`` from ``systemd``; scripts/test installs both.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests import REPO

DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "broadcaster.json"
UNIT = DEPLOY / "systemd" / "broadcaster.service"

# Our families and the process ones; label names, functions and keywords never match.
_METRIC = re.compile(r"\b(?:broadcaster|process)_[a-z0-9_]+\b")
# Grafana's variables, replaced by values a plain Prometheus accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


def tool(name: str) -> str:
    """Path of a required tool, or a clear error saying which Debian package has it."""
    path = shutil.which(name)
    if path is None:
        package = "systemd" if name.startswith("systemd") else "prometheus"
        raise RuntimeError(f"{name} not found: install the Debian package {package!r}")
    return path


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml."""
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> Iterator[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        yield variable["definition"]


def as_promql(expression: str) -> str:
    """A dashboard expression with Grafana's variables replaced (``label_values`` is
    Grafana's, not PromQL: its metric is queried instead)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    match = re.fullmatch(r"label_values\((\w+), *\w+\)", expression)
    return match.group(1) if match else expression


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads."""
    return set(_METRIC.findall(expression))


def referenced_metrics() -> dict[str, set[str]]:
    """Per metric name, where the kit refers to it (an alert's name or a panel's title)."""
    where: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            where.setdefault(name, set()).add(f"alert {rule['alert']}")
    for expression in dashboard_expressions():
        for name in metric_names(expression):
            where.setdefault(name, set()).add("dashboard")
    return where


def unit_with_exec_start(unit: Path, directory: Path, exec_start: str) -> Path:
    """A copy of ``unit`` in ``directory`` whose ExecStart binary is ``exec_start`` (verify
    checks that the binary exists; the unit names where it is installed in production)."""
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={exec_start}", unit.read_text(), flags=re.M)
    copy = directory / unit.name
    copy.write_text(text)
    return copy
