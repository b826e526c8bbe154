"""Alert rules as data: one definition per service, rendered as a Prometheus rules file and a PrometheusRule.

A service's alerts are an :class:`AlertSet`: its ``job``, its rule groups, and where the two renderings
go. :mod:`workshop.observability.alerts` (the wine service) and :mod:`workshop.observability.llm_alerts`
(the LLM service) each define one; ``python -m workshop alerts`` writes the files of both.

Expressions select their service's ``job`` and aggregate ``by (job, namespace)``: Prometheus adds ``job``
and ``instance`` at scrape time, and on Kubernetes also ``namespace``. Summing away ``instance`` turns the
pods of one deployment into one service; keeping ``namespace`` keeps two deployments apart; where a target
has no ``namespace`` label (local), ``by`` and ``on`` treat it as empty on both sides, so the same
expression works on both targets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from textwrap import dedent
from typing import Any

# kube-prometheus-stack's Prometheus picks PrometheusRules by its ruleSelector. With the chart's
# default (prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues: true) that selector is
# `release: <Helm release name>`, in every namespace; the workshop installs the chart as this release.
HELM_RELEASE = "kube-prometheus-stack"
NAMESPACE = "wine-workshop"

# Prometheus' duration syntax (model.ParseDuration): units from largest to smallest, each at most once.
_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


def expr(text: str) -> str:
    """Expressions are written indented in the source and stored without the indentation."""
    return dedent(text).strip()


def is_duration(text: str) -> bool:
    """Whether ``text`` is a Prometheus duration (``15s``, ``1h30m``; not ``15 seconds``, not empty)."""
    return bool(text) and _DURATION.match(text) is not None


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule; ``hold`` is its ``for:``, how long the condition must last before it fires."""

    name: str
    expr: str
    hold: str
    severity: str
    summary: str
    description: str
    runbook: str

    def to_rule(self) -> dict[str, Any]:
        """The rule as Prometheus' rules-file schema spells it."""
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.hold,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description, "runbook": self.runbook},
        }


def target_down_rule(name: str, job: str, service: str, consequence: str, kubernetes_hint: str) -> AlertRule:
    """The first alert of every service: Prometheus cannot scrape one of its targets for a minute.

    Only the service's name, what its users lose and what to look for in ``kubectl describe pod`` differ.
    """
    return AlertRule(
        name=name,
        expr=f'up{{job="{job}"}} == 0',
        hold="1m",
        severity="critical",
        summary=f"{service} target {{{{ $labels.instance }}}} is down",
        description=(
            "Prometheus has failed to scrape /metrics of {{ $labels.instance }} (job {{ $labels.job }}) "
            f"for over a minute: the process is gone, hung, or unreachable. {consequence}"
        ),
        runbook=(
            "Local: is the service running (its log in build/), does `curl <instance>/health` answer? "
            f"Kubernetes: `kubectl get pods` and `kubectl describe pod` for {kubernetes_hint}, then "
            "`kubectl logs --previous`. Prometheus' Targets page shows the scrape error."
        ),
    )


@dataclass(frozen=True)
class RuleGroup:
    """A named group: Prometheus evaluates the rules of a group together, at one interval."""

    name: str
    rules: tuple[AlertRule, ...]


@dataclass(frozen=True)
class AlertSet:
    """The alert rules of one service and where their two renderings are written (relative to the project)."""

    job: str
    rule_name: str
    groups: tuple[RuleGroup, ...]
    rules_file: Path
    manifest_file: Path

    @property
    def alerts(self) -> dict[str, AlertRule]:
        return {rule.name: rule for group in self.groups for rule in group.rules}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.alerts)

    def expressions(self) -> dict[str, str]:
        """Each alert's PromQL by name: what an integration test evaluates against a real Prometheus."""
        return {name: rule.expr for name, rule in self.alerts.items()}

    def check_overrides(self, hold_overrides: Mapping[str, str]) -> None:
        """A misspelt alert name or duration must fail loudly, not leave the production hold in a demo."""
        unknown = sorted(set(hold_overrides) - set(self.alerts))
        if unknown:
            raise ValueError(f"unknown alert name(s) in hold_overrides: {unknown}; known: {list(self.names)}")
        invalid = {name: hold for name, hold in hold_overrides.items() if not is_duration(hold)}
        if invalid:
            raise ValueError(
                f"invalid Prometheus duration(s) in hold_overrides: {invalid} (e.g. '15s', '1m', '1h30m')"
            )

    def prometheus_rules(self, hold_overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The rules-file document; ``hold_overrides`` ({alert name: duration}) shortens ``for:`` for a demo."""
        overrides = dict(hold_overrides or {})
        self.check_overrides(overrides)
        return {
            "groups": [
                {
                    "name": group.name,
                    "rules": [
                        replace(rule, hold=overrides.get(rule.name, rule.hold)).to_rule() for rule in group.rules
                    ],
                }
                for group in self.groups
            ]
        }

    def manifest(self, namespace: str = NAMESPACE) -> dict[str, Any]:
        """The same groups (production holds) as a ``PrometheusRule`` that kube-prometheus-stack loads.

        The ``release`` label is what the chart's default ruleSelector matches (see :data:`HELM_RELEASE`);
        without it the operator ignores the object and no alert ever evaluates.
        """
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": self.rule_name,
                "namespace": namespace,
                "labels": {
                    "app.kubernetes.io/name": self.job,
                    "app.kubernetes.io/part-of": "ml-serving-workshop",
                    "release": HELM_RELEASE,
                },
            },
            "spec": self.prometheus_rules(),
        }
