"""Alert rules of the LLM chat service (app/llm), rendered with the wine service's by ``...observability.alerts``.

What goes wrong with an LLM service is mostly its model's lifecycle: a swap that fails (a wrong model
id, no chat template, the hub unreachable, out of memory) leaves the old model serving, so nothing looks
broken from outside until someone asks which model answers; a pod that is up but has no model answers
every completion with a 503. Then speed: generation is CPU-bound and slow, and when requests arrive
faster than they are generated the bounded queue sheds them (429/503) instead of letting them wait.

Every expression selects ``job="llm"``: on Kubernetes the Service must be named ``llm`` (the chart sets
``job`` to the Service's name; k8s/llm/service.yaml), locally Prometheus must scrape it as job ``llm``.
"""

from __future__ import annotations

from pathlib import Path

from workshop.observability.rules import AlertRule, AlertSet, RuleGroup, expr, target_down_rule

JOB = "llm"
SELECTOR = f'job="{JOB}"'
WINDOW = "5m"
# A failed swap is an event, not a level: it stays visible this long after it happened, even when
# a later swap succeeded (and the lifecycle state is RUNNING again).
SWAP_FAILURE_WINDOW = "15m"
# p95 of a whole generation (prompt processing + every new token). The default model on two laptop
# CPUs makes roughly 10-30 tokens/s, so a 256-token answer takes up to half a minute; beyond that users
# give up. Tune to max_new_tokens_cap and the hardware.
GENERATION_P95_SECONDS = 30.0
# Share of completions refused by the queue limit (outcome="overloaded") that means too little capacity.
OVERLOADED_RATIO_THRESHOLD = 0.1

RULE_NAME = "llm-alerts"
RULES_FILE = Path("dashboards/rules/llm-alerts.rules.yml")
MANIFEST_FILE = Path("k8s/llm/prometheus-rule.yaml")

STATUS_HINT = "GET /status gives the state, the serving and the loading model, the last error and when each began."

RULE_GROUPS: tuple[RuleGroup, ...] = (
    RuleGroup("llm-availability", (
        target_down_rule("LLMServiceDown", JOB, "LLM service", "Completions from it fail.",
                         "restarts, OOMKilled (a model too large for the memory limit) or a failing startup "
                         "probe (a model that loads longer than its budget)"),
        AlertRule(
            name="LLMNoModelServing",
            # Per instance: scraped fine, yet no llm_model_info series at 1 (the serving model's).
            expr=expr(f"""
                max by (job, namespace, instance) (up{{{SELECTOR}}}) == 1
                unless on(job, namespace, instance)
                max by (job, namespace, instance) (llm_model_info{{{SELECTOR}}} == 1)
            """),
            hold="10m",
            severity="critical",
            summary="LLM instance {{ $labels.instance }} serves no model",
            description=(
                "{{ $labels.instance }} (job {{ $labels.job }}) has been up for 10 minutes without a model to "
                "serve: /ready answers 503 and every completion gets a 503. It started with no default model "
                "(NOT_DEPLOYED), or its first model is still loading or failed to load."
            ),
            runbook=(
                STATUS_HINT + " NOT_DEPLOYED: deploy one with POST /model {\"model_id\": ...} (or set "
                "LLM_DEFAULT_MODEL). FAILED: read last_error (no hub access and no local copy under "
                "LLM_MODELS_DIR, a model without a chat template, out of memory) and fix it. LOADING for "
                "this long: a large download; watch the cache volume fill."
            ),
        ),
    )),
    RuleGroup("llm-lifecycle", (
        AlertRule(
            name="LLMModelSwapFailed",
            # The state says it while it lasts; the counter keeps it visible after a later swap succeeded.
            expr=expr(f"""
                sum by (job, namespace) (
                  increase(llm_model_swaps_total{{{SELECTOR}, outcome="failure"}}[{SWAP_FAILURE_WINDOW}])
                ) > 0
                or
                count by (job, namespace) (llm_lifecycle_state{{{SELECTOR}, state="FAILED"}} == 1)
            """),
            hold="0s",
            severity="warning",
            summary="A model swap of the LLM service failed",
            description=(
                "A model load of job {{ $labels.job }} failed in the last " + SWAP_FAILURE_WINDOW + ", or an "
                "instance is still in state FAILED. The previous model (if any) keeps serving, so users get "
                "answers, but not from the model that was asked for."
            ),
            runbook=(
                STATUS_HINT + " Read last_error and loading_model_id: an unknown model id or revision, the hub "
                "unreachable with no local copy, a model without a chat template, or memory. Fix the cause and "
                "POST /model again: a successful swap returns to RUNNING. llm_model_load_seconds{outcome=\"failure\"} "
                "shows how long the failed attempts took."
            ),
        ),
    )),
    RuleGroup("llm-performance", (
        AlertRule(
            name="LLMGenerationLatencyHigh",
            expr=expr(f"""
                histogram_quantile(0.95,
                  sum by (le, job, namespace) (rate(llm_generation_seconds_bucket{{{SELECTOR}}}[{WINDOW}]))
                ) > {GENERATION_P95_SECONDS:g}
            """),
            hold="10m",
            severity="warning",
            summary=f"LLM generation p95 above {GENERATION_P95_SECONDS:g} s",
            description=(
                "For 10 minutes the p95 of whole generations of job {{ $labels.job }} (llm_generation_seconds, "
                "over the last " + WINDOW + ") has been {{ $value | humanizeDuration }}, above "
                f"{GENERATION_P95_SECONDS:g} s. Users wait too long for answers."
            ),
            runbook=(
                "Tokens per second (llm_tokens_per_second) fallen: the CPU is saturated or throttled (compare "
                "process_cpu_seconds_total with the CPU limit and the thread settings) or a larger model was "
                "swapped in (llm_model_info). Tokens per second steady: answers got longer "
                "(llm_completion_tokens_total); lower LLM_MAX_NEW_TOKENS_CAP. Waiting for a free generation "
                "thread is not in this figure: it shows in llm_queue_depth, in the HTTP latency of /completion "
                "and in LLMOverloaded."
            ),
        ),
        AlertRule(
            name="LLMOverloaded",
            expr=expr(f"""
                sum by (job, namespace) (rate(llm_completions_total{{{SELECTOR}, outcome="overloaded"}}[{WINDOW}]))
                  /
                sum by (job, namespace) (rate(llm_completions_total{{{SELECTOR}}}[{WINDOW}]))
                  > {OVERLOADED_RATIO_THRESHOLD:g}
            """),
            hold="5m",
            severity="warning",
            summary="The LLM service refuses {{ $value | humanizePercentage }} of completions: queue full",
            description=(
                "For 5 minutes more than " + f"{OVERLOADED_RATIO_THRESHOLD:.0%}" + " of the completion requests "
                "of job {{ $labels.job }} were refused because the generation queue was full (429/503 at once, "
                "outcome=\"overloaded\"); now {{ $value | humanizePercentage }}."
            ),
            runbook=(
                "More requests arrive than LLM_MAX_BATCH_SIZE rows decoding together, plus LLM_MAX_QUEUE waiting. "
                "Add replicas (each holds its own copy of the model: memory), or lower LLM_MAX_NEW_TOKENS_CAP so "
                "each generation ends sooner. Raising LLM_MAX_QUEUE only trades refusals for waiting "
                "(see LLMGenerationLatencyHigh)."
            ),
        ),
    )),
)

LLM_ALERTS = AlertSet(
    job=JOB, rule_name=RULE_NAME, groups=RULE_GROUPS, rules_file=RULES_FILE, manifest_file=MANIFEST_FILE
)
ALERT_NAMES: tuple[str, ...] = LLM_ALERTS.names
