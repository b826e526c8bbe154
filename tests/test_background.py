"""Background traffic through a rollout: every request is recorded with its status and who answered."""

from __future__ import annotations

import pytest

from workshop.background import NO_ANSWER, BackgroundTraffic, per_second, wine_prediction
from workshop.client import WineClient
from workshop.targets import LocalTarget, RolloutFailedError
from workshop.waiting import wait_for

pytestmark = pytest.mark.slow


def wait_until(condition, timeout: float = 30.0) -> None:
    wait_for(condition, timeout, "the background traffic to record it", interval=0.01, retry_on=())

WINE = {
    "fixed_acidity": 7.4, "volatile_acidity": 0.7, "citric_acid": 0.0, "residual_sugar": 1.9,
    "chlorides": 0.076, "free_sulfur_dioxide": 11.0, "total_sulfur_dioxide": 34.0, "density": 0.9978,
    "ph": 3.51, "sulphates": 0.56, "alcohol": 9.4, "color": "red",
}


def test_a_rolling_update_under_traffic_drops_nothing_and_a_stopped_service_is_seen(model_dir, tmp_path):
    target = LocalTarget(log_dir=tmp_path / "logs")
    try:
        service = target.deploy_wine(model_dir)
        version = WineClient(service.url).model_card()["version"]
        with (BackgroundTraffic(lambda: service.url, wine_prediction(WINE), pause_s=0.01) as refused,
              pytest.raises(RolloutFailedError)):
            target.roll_out("wine", model_dir=str(tmp_path / "no-model"), timeout=3)
        with BackgroundTraffic(lambda: service.url, wine_prediction(WINE), pause_s=0.01) as rolled:
            target.roll_out("wine", log_level="DEBUG", timeout=30)
        for traffic in (refused, rolled):
            assert len(traffic.records) > 20 and traffic.failed == 0, traffic.summary()
            assert set(traffic.frame["answered_by"]) == {version}
        by_status = per_second(refused, "status")
        assert list(by_status.columns) == [200] and by_status.to_numpy().sum() == len(refused.records)
        assert (by_status.index[1:] - by_status.index[:-1]).total_seconds().tolist() == [1.0] * (len(by_status) - 1)
        url = service.url
        with BackgroundTraffic(url, wine_prediction(WINE), pause_s=0.01, timeout_s=2) as stopping:
            wait_until(lambda: stopping.records)
            service.stop()
            wait_until(lambda: any(status == NO_ANSWER for _, status, _ in stopping.records))
        assert stopping.failed > 0 and stopping.summary()["statuses"]["no answer"] > 0
        assert "ConnectError" in set(stopping.frame["answered_by"])
    finally:
        target.teardown()


def test_waiting_for_an_answer_returns_once_it_came_and_times_out_with_the_summary_otherwise():
    answers = iter(["old", "old", "new"] + ["new"] * 10_000)
    with BackgroundTraffic("http://127.0.0.1:9", lambda http: (200, next(answers)), pause_s=0.001) as traffic:
        traffic.wait_until(traffic.answered_by("new"), timeout=10)
        with pytest.raises(TimeoutError, match="'requests'"):
            traffic.wait_until(traffic.answered_by("nobody"), timeout=0.2)
    assert [by for _, _, by in traffic.records[:3]] == ["old", "old", "new"] and traffic.failed == 0
