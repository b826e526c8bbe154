"""The exercises' self-checks: each says "not done yet" before the learner acts, "done" for a right answer and
"still wrong", with the reason, for the mistakes a learner makes. Real services and data, no stand-ins."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.llm_fixtures import MODEL_A, NO_TEMPLATE, llm_models_dir  # noqa: F401 - a fixture
from training.wine import split
from workshop.client import WineClient
from workshop.exercises import DONE, NOT_DONE, WRONG, check_prediction, verdict_state
from workshop.exercises.containerise import check_hardening_flags
from workshop.exercises.deploy import check_rolled_out
from workshop.exercises.llm import check_failed_swap
from workshop.exercises.loadtest import check_most_users_within_slo
from workshop.exercises.serve import check_batch_names_the_bad_wine
from workshop.exercises.train import check_constant_baseline
from workshop.llm_client import LLMClient
from workshop.targets import LocalTarget

WINE = {
    "fixed_acidity": 7.4, "volatile_acidity": 0.7, "citric_acid": 0.0, "residual_sugar": 1.9,
    "chlorides": 0.076, "free_sulfur_dioxide": 11.0, "total_sulfur_dioxide": 34.0, "density": 0.9978,
    "ph": 3.51, "sulphates": 0.56, "alcohol": 9.4, "color": "red",
}


def test_a_printed_verdict_reads_back_as_its_state():
    for state in (DONE, NOT_DONE, WRONG):
        verdict = check_prediction(None, 1, variable="x", explanation="")
        verdict = type(verdict)(state, "some words")
        assert verdict_state(str(verdict) + "\nmore lines") == state
        assert bool(verdict) is (state == DONE)
    assert verdict_state("done: but not printed by a check") is None
    assert verdict_state("") is None


@pytest.mark.parametrize(("prediction", "outcome", "state"), [
    (None, "random_forest", NOT_DONE),
    ("Random_Forest ", "random_forest", DONE),
    ("linear", "random_forest", WRONG),
    (3, 3, DONE), (3.0, 3, DONE), (2, 3, WRONG),
    (False, False, DONE), (True, False, WRONG),
    (0, False, WRONG),  # a number is not an answer to a yes/no question
])
def test_a_prediction_is_compared_with_what_happened(prediction, outcome, state):
    verdict = check_prediction(prediction, outcome, variable="guess", explanation="Because.")
    assert verdict.state == state
    if state == NOT_DONE:
        assert "`guess`" in verdict.message
    else:
        assert repr(outcome) in verdict.message and verdict.message.endswith("Because.")


def test_the_constant_baseline_is_the_training_mean_scored_on_the_test_wines(wine_data):
    from sklearn.dummy import DummyRegressor
    from sklearn.metrics import root_mean_squared_error

    wines = split(wine_data.frame)
    dummy = DummyRegressor(strategy="mean").fit(wines.X_train, wines.y_train)
    rmse = root_mean_squared_error(wines.y_test, dummy.predict(wines.X_test))
    assert 0.8 < rmse < 0.95, "the baseline the notebook's prose quotes"
    assert check_constant_baseline(None, wine_data.frame).state == NOT_DONE
    assert check_constant_baseline(rmse, wine_data.frame).state == DONE
    squared = check_constant_baseline(rmse ** 2, wine_data.frame)  # the MSE, not its root
    assert squared.state == WRONG and "root of the mean squared error" in squared.message
    assert check_constant_baseline(math.nan, wine_data.frame).state == WRONG
    assert "number" in check_constant_baseline("0.87", wine_data.frame).message


@pytest.fixture(scope="module")
def wine_service(model_dir, tmp_path_factory):
    target = LocalTarget(log_dir=tmp_path_factory.mktemp("exercise-logs"))
    try:
        service = target.deploy_wine(model_dir)
        yield target, service
    finally:
        target.teardown()


@pytest.mark.slow
def test_a_bad_batch_is_done_only_when_the_error_names_the_third_wine(wine_service):
    _, service = wine_service
    client = WineClient(service.url)
    assert check_batch_names_the_bad_wine(client, None).state == NOT_DONE
    right = check_batch_names_the_bad_wine(client, {"instances": [WINE, WINE, {**WINE, "color": "rosé"}]})
    assert right.state == DONE and "instances[2].color" in right.message
    accepted = check_batch_names_the_bad_wine(client, {"instances": [WINE, WINE, WINE]})
    assert accepted.state == WRONG and "accepted" in accepted.message
    two_wrong = {"instances": [{**WINE, "ph": 15}, WINE, {**WINE, "color": "rosé"}]}
    assert "instances[0].ph" in check_batch_names_the_bad_wine(client, two_wrong).message
    assert check_batch_names_the_bad_wine(client, {"instances": [WINE]}).state == WRONG
    assert check_batch_names_the_bad_wine(client, [WINE, WINE, WINE]).state == WRONG


@pytest.mark.slow
def test_a_good_rollout_is_done_when_every_replica_runs_the_setting_and_serves(wine_service, model_dir):
    target, service = wine_service
    version = WineClient(service.url).model_card()["version"]
    common = {"version": version, "replicas": 1, "setting": "log_level", "value": "DEBUG"}
    assert check_rolled_out(target, service.url, None, **common).state == NOT_DONE
    other = target.roll_out("wine", log_level="WARNING", timeout=30)
    wrong_value = check_rolled_out(target, service.url, other, **common)
    assert wrong_value.state == WRONG and "WINE_LOG_LEVEL=['WARNING']" in wrong_value.message
    rolled = target.roll_out("wine", log_level="DEBUG", timeout=30)
    verdict = check_rolled_out(target, service.url, rolled, **common)
    assert verdict.state == DONE, verdict.message
    assert check_rolled_out(target, service.url, rolled, **{**common, "replicas": 2}).state == WRONG


@pytest.mark.parametrize(("flags", "state", "words"), [
    (None, NOT_DONE, "hardening_flags"),
    (["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"], DONE, ""),
    (["--read-only", "--tmpfs=/tmp", "--cap-drop=all", "--security-opt=no-new-privileges"], DONE, ""),
    ("--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges", DONE, ""),
    (["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"], WRONG, "--tmpfs /tmp"),
    (["--read-only", "--tmpfs", "/tmp", "--cap-drop", "NET_RAW", "--security-opt", "no-new-privileges"], WRONG,
     "--cap-drop ALL"),
    (["--privileged"], WRONG, "--read-only"),
])
def test_the_hardening_flags_are_those_of_the_pods_security_context(flags, state, words):
    verdict = check_hardening_flags(flags)
    assert verdict.state == state and words in verdict.message


def test_the_most_users_within_the_slo_stops_at_the_first_step_that_missed_it():
    by_users = pd.DataFrame({"meets_slo": [True, True, False, True]}, index=pd.Index([5, 10, 15, 20], name="users"))
    assert check_most_users_within_slo(None, by_users).state == NOT_DONE
    assert check_most_users_within_slo(10, by_users).state == DONE
    assert check_most_users_within_slo(20, by_users).state == WRONG, "a later step that met it does not count"
    assert check_most_users_within_slo(5, by_users).state == WRONG
    first_missed = by_users.assign(meets_slo=[False, True, True, True])
    assert check_most_users_within_slo(0, first_missed).state == DONE
    all_met = by_users.assign(meets_slo=True)
    assert "all the way" in check_most_users_within_slo(20, all_met).message


@pytest.mark.slow
def test_a_failed_swap_is_done_only_when_the_old_model_still_serves(llm_models_dir, tmp_path):  # noqa: F811
    target = LocalTarget(log_dir=tmp_path / "logs")
    try:
        service = target.deploy_llm(llm_models_dir, default_model=MODEL_A, timeout=120)
        client = LLMClient(service.url)
        chat = [{"role": "user", "content": "Hello"}]
        common = {"serving_before": MODEL_A, "conversation": chat, "max_new_tokens": 4}
        assert check_failed_swap(client, None, **common).state == NOT_DONE
        failed = [client.swap(NO_TEMPLATE), client.wait_for_state(("RUNNING", "FAILED"), 60)]
        verdict = check_failed_swap(client, failed, **common)
        assert verdict.state == DONE and MODEL_A in verdict.message and "chat template" in verdict.message
        loaded = check_failed_swap(client, [{"state": "RUNNING", "serving_model_id": "other"}], **common)
        assert loaded.state == WRONG and "loaded" in loaded.message
        lost = check_failed_swap(client, [{"state": "FAILED", "serving_model_id": "other"}], **common)
        assert lost.state == WRONG and "lost" in lost.message
    finally:
        target.teardown()
