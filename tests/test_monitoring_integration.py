"""The whole monitoring story against real processes: the dashboard's queries and the alert rules
are evaluated by a real Prometheus scraping a real uvicorn wine service fed with known traffic."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime

import httpx
import numpy as np
import pytest

from app.wine.features import FEATURES
from workshop.observability.alerts import ALERT_NAMES, alert_expressions
from workshop.observability.dashboards import panel_queries
from workshop.paths import project_root
from workshop.preview import substitute
from workshop.prometheus import INSTALL_HINT, alerts, next_scrape, query, wait_for
from workshop.targets import LocalTarget
from workshop.traffic import MAX_REQUESTS, bodies, drift, ramp, send_traffic, wine_frame

DASHBOARD = project_root() / "dashboards" / "model.json"
# Wide enough that every rate() in the panels spans several scrapes of the traffic below.
VARIABLES = {"job": "wine", "namespace": ".*", "datasource": "prometheus", "__rate_interval": "1m",
             "__interval": "5s", "__range": "5m"}
DRIFT_ALERT = "WineFeatureDrift"


def test_drifted_wines_are_still_valid_wines(wine_data):
    frame = wine_frame(500, seed=1)
    drifted = drift(frame)
    for feature in FEATURES:
        assert drifted[feature.name].between(feature.minimum, feature.maximum).all(), feature.name
    assert (drifted["free_sulfur_dioxide"] <= drifted["total_sulfur_dioxide"]).all()
    assert np.allclose(drifted["alcohol"], np.minimum(frame["alcohol"] + 3, 25))
    assert drifted["residual_sugar"].mean() == pytest.approx(3 * frame["residual_sugar"].mean())


def test_traffic_is_seeded_and_bounded(wine_data):
    assert bodies("invalid", 20, seed=4) == bodies("invalid", 20, seed=4) != bodies("invalid", 20, seed=5)
    assert len(set(bodies("valid", 50, seed=0))) > 40
    with pytest.raises(ValueError, match="between 0 and"):
        bodies("valid", MAX_REQUESTS + 1)
    assert bodies("valid", 0) == [], "a round of a ramp may send nothing"
    with pytest.raises(ValueError, match="unknown traffic kind"):
        bodies("weird", 1)  # type: ignore[arg-type]
    assert {key for body in bodies("invalid", 5) for key in json.loads(body)} >= {"color"}


@pytest.fixture(scope="module")
def monitored(model_dir, tmp_path_factory):
    """A wine service, a Prometheus with the workshop's rules (drift holds shortened), and traffic."""
    if shutil.which("prometheus") is None:
        pytest.skip(INSTALL_HINT)
    target = LocalTarget(log_dir=tmp_path_factory.mktemp("monitoring"))
    try:
        service = target.deploy_wine(model_dir)
        url = target.start_monitoring(hold_overrides={DRIFT_ALERT: "3s", "WinePredictionDrift": "3s"})
        sent: dict[str, Counter[int]] = {"valid": Counter(), "invalid": Counter(), "drifted": Counter()}
        # Rounds with a scrape after each: a counter first seen with traffic only shows what it gains later.
        for round_ in range(2):
            sent["valid"] += send_traffic(service.url, "valid", 100, seed=round_)
            sent["invalid"] += send_traffic(service.url, "invalid", 25, seed=round_)
            next_scrape(url)
        for round_ in range(2):
            sent["drifted"] += send_traffic(service.url, "drifted", 150, seed=10 + round_)
            next_scrape(url)
        # Queries are evaluated as of the end of the traffic: the rate() windows then hold all of it,
        # however long the tests before took.
        yield url, sent, datetime.now().astimezone()
    finally:
        target.teardown()


@pytest.mark.slow
@pytest.mark.parametrize(("total", "rounds"), [(200, 16), (40, 16), (7, 3), (0, 4), (5, 1)])
def test_a_ramp_climbs_and_sends_exactly_the_total(total, rounds):
    counts = ramp(total, rounds)
    assert len(counts) == rounds and sum(counts) == total
    assert counts == sorted(counts), "each round sends at least as many as the one before"
    if rounds > 1 and total >= rounds * 2:
        assert counts[-1] > 2 * counts[0], "it climbs: the last round is well above the first"


def test_a_ramp_needs_rounds():
    with pytest.raises(ValueError, match="at least one round"):
        ramp(10, 0)


def test_traffic_was_answered_as_expected(monitored):
    _, sent, _ = monitored
    assert sent == {"valid": {200: 200}, "invalid": {422: 50}, "drifted": {200: 300}}


@pytest.mark.slow
def test_every_panel_query_of_the_dashboard_returns_data(monitored):
    url, _, ended = monitored
    queries = panel_queries(json.loads(DASHBOARD.read_text()))
    assert queries, "the dashboard has panel queries"
    missing = [f"{title} {ref}: {expr}" for title, ref, expr in queries
               if query(url, substitute(expr, VARIABLES), at=ended).empty]
    assert not missing, "panels without data:\n" + "\n".join(missing)


@pytest.mark.slow
def test_every_alert_expression_evaluates(monitored):
    url, _, _ = monitored
    assert set(alert_expressions()) == set(ALERT_NAMES)
    for name, expr in alert_expressions().items():
        answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", f"{name}: {answer.get('error')}"


@pytest.mark.slow
def test_the_drift_panel_shows_stronger_and_sweeter_wines(monitored):
    url, _, ended = monitored
    drift_panels = [(title, expr) for title, _, expr in panel_queries(json.loads(DASHBOARD.read_text()))
                    if "drift" in title.lower()]
    assert drift_panels, "the dashboard has a drift panel"
    frame = query(url, substitute(drift_panels[0][1], VARIABLES), at=ended)
    ratios = dict(zip(frame["feature"], frame["value"], strict=True))
    assert ratios["alcohol"] > 1.05 and ratios["residual_sugar"] > 1.5, ratios


@pytest.mark.slow
def test_the_drift_alert_goes_pending_or_firing(monitored):
    url, _, _ = monitored

    def drift_alerts():
        frame = alerts(url)
        return frame[(frame["name"] == DRIFT_ALERT) & frame["state"].isin(["pending", "firing"])]

    found = wait_for(drift_alerts, timeout=30, what=f"{DRIFT_ALERT} pending or firing")
    assert "residual_sugar" in {labels.get("feature") for labels in found["labels"]}
