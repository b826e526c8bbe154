"""The LLM chat service's Grafana dashboard (``dashboards/llm.json``), from the metrics of app/llm.

Top to bottom, the questions an operator asks: which model serves and in what state is the lifecycle;
how many completions succeed, how fast tokens come out and how long users wait; how long models take to
load and whether swaps fail; what HTTP and the process look like. The thresholds drawn are the alert
rules' (:mod:`workshop.observability.llm_alerts`), so the panel shows the line the alert watches.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import common

from workshop.observability import panels
from workshop.observability.llm_alerts import GENERATION_P95_SECONDS, JOB
from workshop.observability.panels import PanelBuilder, metric, query, rate, sized, timeseries_panel


def _stat(title: str, description: str) -> stat.Panel:
    """A stat panel showing each series' name and value (which state, which model), no sparkline."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(panels.DATASOURCE)
        .unit("short")
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(common.BigValueColorMode.NONE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


# --- Service -------------------------------------------------------------------------------------


def state_panel() -> PanelBuilder:
    """The lifecycle state first: it says whether anything below can have data."""
    return _stat(
        "Lifecycle state",
        "How many instances are in each lifecycle state (llm_lifecycle_state). RUNNING: a model serves. "
        "LOADING: a model is being loaded (at start, or a swap: the previous model keeps serving meanwhile). "
        "FAILED: the last load failed; the previous model, if there was one, still serves (see the serving "
        "model next to this). NOT_DEPLOYED: no model at all, every completion gets a 503.",
    ).with_target(query(f"sum by (state) ({metric('llm_lifecycle_state')} == 1)", "{{state}}").instant())


def serving_model_panel() -> PanelBuilder:
    """Which model answers: after a swap, the first thing to check."""
    return _stat(
        "Serving model",
        "The model each instance serves (llm_model_info), with its revision, dtype and source (a hub id or a "
        "folder under the models directory), and the number of instances serving it. After a failed swap "
        "this still shows the old model: that is the point of the lifecycle. Two models for long means "
        "replicas that answer differently. No value: no model serves.",
    ).with_target(
        query(
            f"count by (model_id, revision, dtype, source) ({metric('llm_model_info')} == 1)",
            "{{model_id}} ({{dtype}}, {{source}}) {{revision}}",
        ).instant()
    )


def state_history_panel() -> PanelBuilder:
    """The states over time: a swap is a LOADING bump, a failure a FAILED plateau."""
    return (
        timeseries_panel(
            "State history (instances per state)",
            "Instances in each state over time. A swap shows as a short LOADING step between two RUNNING "
            "stretches; a failed swap as LOADING followed by FAILED, which lasts until the next successful "
            "swap. Loading again and again (LOADING returning after restarts) usually means the startup probe "
            "or the memory limit kills the pod before the model is ready.",
            "short",
        )
        .min(0)
        .decimals(0)
        .with_target(query(f"sum by (state) ({metric('llm_lifecycle_state')})", "{{state}}"))
    )


def queue_depth_panel() -> PanelBuilder:
    """Concurrency and waiting: the queue that becomes latency, then refusals."""
    return (
        timeseries_panel(
            "Queue depth (generating + waiting)",
            "Generations running plus requests waiting for a slot, per instance (llm_queue_depth), sampled at "
            "each scrape. Up to the batch size (LLM_MAX_BATCH_SIZE) everything decodes together; above it "
            "requests wait, and beyond the queue limit (LLM_MAX_QUEUE) they are refused at once with "
            "429/503 (outcome \"overloaded\"). A queue that stays full needs more replicas.",
            "short",
        )
        .min(0)
        .with_target(query(f"sum by (instance) ({metric('llm_queue_depth')})", "{{instance}}"))
    )


# --- Completions ---------------------------------------------------------------------------------


def completions_panel() -> PanelBuilder:
    """Outcomes, not HTTP codes: what happened to each chat request."""
    return timeseries_panel(
        "Completions by outcome",
        "Completion requests per second by outcome: success; invalid (refused input: 422, too many messages "
        "or characters); unavailable (no model serves: 503); overloaded (queue full: refused at once); error "
        "(generation failed: a bug, or memory); cancelled (the client went away: the generation stopped at its "
        "next token). Anything but success deserves a look; a steady overloaded line means too little capacity.",
        "reqps",
    ).with_target(query(f"sum by (outcome) ({rate('llm_completions_total')})", "{{outcome}}"))


def tokens_panel() -> PanelBuilder:
    """Tokens are the unit of work of an LLM: requests per second alone hide a 10x longer answer."""
    return (
        timeseries_panel(
            "Tokens per second in (prompt) and out (completion)",
            "Prompt tokens read and completion tokens generated per second, all requests together. Prompt "
            "tokens cost little (processed in one pass); completion tokens are generated one at a time and "
            "are what the CPU spends its time on. Out rising while requests stay flat means longer answers.",
            "short",
        )
        .min(0)
        .targets(
            [
                query(f"sum({rate('llm_prompt_tokens_total')})", "prompt tokens/s"),
                query(f"sum({rate('llm_completion_tokens_total')})", "completion tokens/s", "B"),
            ]
        )
    )


def generation_latency_panel() -> PanelBuilder:
    """How long generating takes, and how long users wait: the gap between the two is the queue."""
    request = rate("http_request_duration_seconds_bucket", 'handler="/completion"')
    return panels.dashed_thresholds(
        timeseries_panel(
            "Generation latency p50 / p95 / p99",
            "Time to generate a whole answer, from a generation thread taking the request to its last token "
            "(llm_generation_seconds histogram; prompt processing included, waiting for a free thread "
            "excluded), as percentiles; and the p95 of the whole POST /completion as the client sees it "
            "(HTTP, waiting included). A gap between the two p95 lines is time spent queueing (see queue "
            f"depth). The dashed line is the alert threshold on the generation p95 ({GENERATION_P95_SECONDS:g} s). "
            "Generation time grows with max_new_tokens and the model size, and drops in speed when the CPU "
            "is throttled: compare with tokens per second before blaming the model.",
            "s",
        ).min(0),
        "green",
        (GENERATION_P95_SECONDS, "red"),
    ).targets(
        [
            *panels.quantile_targets(rate("llm_generation_seconds_bucket")),
            query(f"histogram_quantile(0.95, sum by (le) ({request}))", "p95 whole request (queueing included)",
                  "D"),
        ]
    )


def tokens_per_second_panel() -> PanelBuilder:
    """Speed per request: independent of the answer's length, so it isolates the model and the CPU."""
    return (
        timeseries_panel(
            "Generation speed (tokens per second per request)",
            "Completion tokens per second of generation, per request (llm_tokens_per_second histogram): the "
            "median and the slowest 10 % (p10: lower is worse). It does not depend on how long the answers "
            "are, so a drop means slower generation: a bigger model, CPU throttling at the limit, too many "
            "generations sharing the cores, or more threads than CPUs.",
            "short",
        )
        .min(0)
        .targets(
            [
                query(f"histogram_quantile(0.5, sum by (le) ({rate('llm_tokens_per_second_bucket')}))", "p50"),
                query(
                    f"histogram_quantile(0.1, sum by (le) ({rate('llm_tokens_per_second_bucket')}))",
                    "p10 (slowest 10 %)",
                    "B",
                ),
            ]
        )
    )


def time_to_first_token_panel() -> PanelBuilder:
    """Streaming users see the first token, not the whole answer: this is their latency."""
    return timeseries_panel(
        "Time to first token p50 / p95 (streaming)",
        "For streaming requests (\"stream\": true), the time until the first token is sent "
        "(llm_time_to_first_token_seconds): what a chat user perceives as responsiveness. It is the prompt "
        "processing plus the wait for a generation slot, so it rises with long prompts (many messages) and "
        "with a queue. No data: no streaming requests.",
        "s",
    ).min(0).targets(panels.quantile_targets(rate("llm_time_to_first_token_seconds_bucket"), (0.5, 0.95)))


# --- Model lifecycle -----------------------------------------------------------------------------


def load_duration_panel() -> PanelBuilder:
    """Loads are rare events: the duration of each, and the mean since the process started."""
    in_window = (
        f"sum by (outcome) (increase({metric('llm_model_load_seconds_sum')}[{panels.RATE}]))"
        f" / (sum by (outcome) (increase({metric('llm_model_load_seconds_count')}[{panels.RATE}])) > 0)"
    )
    since_start = (
        f"sum by (outcome) ({metric('llm_model_load_seconds_sum')})"
        f" / sum by (outcome) ({metric('llm_model_load_seconds_count')})"
    )
    return (
        timeseries_panel(
            "Model load duration",
            "How long model loads take, by outcome (llm_model_load_seconds): a point where loads ended in that "
            "interval (their mean duration), and the mean of all loads since each process started (which "
            "includes the load at start-up). A hub model's first load includes its download; later ones read "
            "the cache volume. The startup probe must allow the start-up load, or the pod never gets ready.",
            "s",
        )
        .min(0)
        .targets([query(in_window, "{{outcome}}"), query(since_start, "{{outcome}} (mean since start)", "B")])
    )


def swaps_panel() -> PanelBuilder:
    """Swaps by outcome, as running totals: each step up is one swap."""
    return (
        timeseries_panel(
            "Model swaps by outcome (since start)",
            "Model loads since each process started, by outcome (llm_model_swaps_total): the load of the "
            "default model at start-up, then one per POST /model. Each step up is one load. A failure step "
            "fires the LLMModelSwapFailed alert; GET /status then says why. A restart resets the counts to 0 "
            "and loads the default model again, not the last one swapped in.",
            "short",
        )
        .min(0)
        .decimals(0)
        .with_target(query(f"sum by (outcome) ({metric('llm_model_swaps_total')})", "{{outcome}}"))
    )


# --- Dashboard -----------------------------------------------------------------------------------


def _rows() -> list[panels.Row]:
    """The layout, top to bottom: which model and state, the completions, the lifecycle, HTTP and process."""
    return [
        (
            "Service",
            [
                sized(state_panel(), 5, 6),
                sized(serving_model_panel(), 7, 6),
                sized(state_history_panel(), 12, 6),
            ],
        ),
        (
            "Completions",
            [
                sized(completions_panel(), 12),
                sized(tokens_panel(), 12),
                sized(generation_latency_panel(), 12),
                sized(tokens_per_second_panel(), 12),
                sized(time_to_first_token_panel(), 12),
                sized(queue_depth_panel(), 12),
            ],
        ),
        ("Model lifecycle", [sized(load_duration_panel(), 12), sized(swaps_panel(), 12)]),
        (
            "HTTP and process",
            [
                sized(panels.request_rate_panel(), 12),
                sized(panels.error_ratio_panel(), 12),
                *panels.process_panels(),
            ],
        ),
    ]


def build_llm_dashboard() -> dict:
    """The LLM service's dashboard: lifecycle, completions and tokens, model loads and swaps, HTTP, process."""
    return panels.build_dashboard(
        title="LLM service",
        uid="llm-service",
        description=(
            "The transformers chat service: which model serves and its lifecycle state, completions, tokens "
            "and latency, model loads and swaps, HTTP errors and the process."
        ),
        tags=["llm", "ml-serving-workshop"],
        job=JOB,
        # Always exported, whatever the state (llm_model_info has no series while no model serves).
        discovery_metric="llm_lifecycle_state",
        rows=_rows(),
    )
