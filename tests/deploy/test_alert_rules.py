"""The alert rules pass Prometheus' own checks: ``promtool check rules`` (syntax, templates)
and ``promtool test rules`` (each rule fires on the series it is meant for, and stays quiet on
the others; see the cases in deploy/prometheus/alerts.test.yml)."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.tools import ALERT_TESTS, ALERTS, alert_rules, tool

EXPECTED_ALERTS = {
    "BroadcasterDatabaseDown",
    "BroadcasterNoClients",
    "BroadcasterHeartbeatFailures",
    "BroadcasterSlowConsumers",
    "BroadcasterTicksOverrunning",
    "BroadcasterUpdateAgeHigh",
    "BroadcasterMemoryGrowth",
    "BroadcasterClusterLocalMode",
}


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [tool("promtool"), "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_says_what_it_means_and_what_to_do() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["service"] == "broadcaster"
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert set(rule["annotations"]) == {"summary", "description"}
        assert len(rule["annotations"]["description"]) > 150, rule["alert"]


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    firing, quiet = set(), set()
    for case in cases:
        series = {entry["series"].split("{")[0] for entry in case["input_series"]}
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            fired = {alert["exp_labels"]["instance"] for alert in check["exp_alerts"]}
            if fired:
                firing.add(name)
            # Quiet: an evaluation expecting nothing, or an instance in the input that must
            # not be among those that fire.
            instances = {
                entry["series"].split('instance="')[1].split('"')[0]
                for entry in case["input_series"]
            }
            if not fired or instances - fired:
                quiet.add(name)
        assert series, case
    assert firing == quiet == EXPECTED_ALERTS
