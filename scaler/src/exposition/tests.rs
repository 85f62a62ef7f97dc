use super::gauge_sum;

/// Trimmed from a vLLM 0.6 `/metrics` page: HELP/TYPE lines, labels, a histogram, a counter.
const VLLM: &str = r#"# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="False",gpu_memory_utilization="0.9",num_cpu_blocks="2048",num_gpu_blocks="27713",swap_space_bytes="4294967296"} 1.0
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4213
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
vllm:time_to_first_token_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
vllm:time_to_first_token_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.734
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 20480.0
"#;

/// SGLang, two data-parallel ranks of one model.
const SGLANG: &str = r#"# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B",dp_rank="0"} 3.0
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B",dp_rank="1"} 5.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B",dp_rank="0"} 2.0
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B",dp_rank="1"} 1.0
"#;

/// Triton: integer values, one sample per model and version.
const TRITON: &str = r#"# HELP nv_inference_pending_request_count Instantaneous number of pending requests awaiting execution per-model.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="resnet50",version="1"} 3
nv_inference_pending_request_count{model="bert",version="2"} 0
nv_inference_pending_request_count{model="ensemble",version="1"} 4
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-0c3b2e0f-1b2a-4c5d-9e8f-0a1b2c3d4e5f"} 0.25
"#;

/// vLLM's gauges are read by exact name, labels ignored.
#[test]
fn vllm_gauges() {
    assert_eq!(gauge_sum(VLLM, "vllm:num_requests_waiting"), Some(7.0));
    assert_eq!(gauge_sum(VLLM, "vllm:num_requests_running"), Some(4.0));
    assert_eq!(gauge_sum(VLLM, "vllm:gpu_cache_usage_perc"), Some(0.4213));
}

/// A histogram's name alone matches none of its `_bucket`/`_sum`/`_count` lines; each of
/// those can be asked for by its own name.
#[test]
fn histogram_series_by_exact_name() {
    assert_eq!(gauge_sum(VLLM, "vllm:time_to_first_token_seconds"), None);
    assert_eq!(
        gauge_sum(VLLM, "vllm:time_to_first_token_seconds_count"),
        Some(12.0)
    );
    assert_eq!(
        gauge_sum(VLLM, "vllm:time_to_first_token_seconds_sum"),
        Some(1.734)
    );
}

/// Samples of one metric across label sets are summed.
#[test]
fn sglang_and_triton_sum_over_labels() {
    assert_eq!(gauge_sum(SGLANG, "sglang:num_queue_reqs"), Some(3.0));
    assert_eq!(gauge_sum(SGLANG, "sglang:num_running_reqs"), Some(8.0));
    assert_eq!(
        gauge_sum(TRITON, "nv_inference_pending_request_count"),
        Some(7.0)
    );
}

/// An absent metric is `None`, not zero; a prefix of a longer name is a different metric.
#[test]
fn absent_metric_is_none() {
    assert_eq!(gauge_sum(VLLM, "vllm:num_requests_swapped"), None);
    assert_eq!(gauge_sum(VLLM, "vllm:num_requests"), None);
    assert_eq!(gauge_sum("", "x"), None);
    assert_eq!(gauge_sum(TRITON, "nv_gpu"), None);
}

/// Label values may hold quotes (escaped), backslashes, commas, braces and spaces.
#[test]
fn tricky_label_values() {
    let text = concat!(
        "m:x{path=\"say \\\"hi\\\", }\",b=\"c:\\\\d\"} 2\n",
        "m:x{ a = \"1\" , } 3\n",
        "m:x{} 4\n",
        "m:x{a=\"é ü\"}5\n",
    );
    assert_eq!(gauge_sum(text, "m:x"), Some(14.0));
}

/// Timestamps, exponents, signs, infinities; NaN samples are skipped.
#[test]
fn values_timestamps_and_specials() {
    let text = "a 1.5e2 1395066363000\na{x=\"1\"} -0.5\nb NaN\nc +Inf\nd -Inf 1\ne 2 # {trace_id=\"x\"} 1\n";
    assert_eq!(gauge_sum(text, "a"), Some(149.5));
    assert_eq!(gauge_sum(text, "b"), None);
    assert_eq!(gauge_sum(text, "c"), Some(f64::INFINITY));
    assert_eq!(gauge_sum(text, "d"), Some(f64::NEG_INFINITY));
    assert_eq!(gauge_sum(text, "e"), Some(2.0));
    let mixed = "b NaN\nb{x=\"1\"} 2\n";
    assert_eq!(gauge_sum(mixed, "b"), Some(2.0));
}

/// CRLF line endings, indentation and missing final newline are fine.
#[test]
fn line_endings() {
    assert_eq!(gauge_sum("a 1\r\na 2\r\n", "a"), Some(3.0));
    assert_eq!(gauge_sum("  a 1\n\n\ta 2", "a"), Some(3.0));
}

/// A garbled line of another metric (or no metric at all) does not lose the scrape.
#[test]
fn odd_lines_of_other_metrics_are_ignored() {
    let text = String::from(
        "this is not { valid\nINFO: 127.0.0.1 - GET /metrics 200\nother{a=\"unterminated 1\nother 1 2 3 4\n",
    ) + VLLM;
    assert_eq!(gauge_sum(&text, "vllm:num_requests_waiting"), Some(7.0));
}

/// A malformed line of the metric asked for makes the whole answer `None`: a partial sum
/// would be a wrong number.
#[test]
fn malformed_line_of_the_metric_is_none() {
    for bad in [
        "a{x=\"1\"} 1\na{x=\"2\" 2\n",
        "a{x=\"1} 1\n",
        "a{x=1} 1\n",
        "a{=\"1\"} 1\n",
        "a{1x=\"1\"} 1\n",
        "a 1\na\n",
        "a one\n",
        "a 1 later\n",
        "a 1 2 3\n",
        "a{x=\"1\"}\n",
    ] {
        assert_eq!(gauge_sum(bad, "a"), None, "{bad:?}");
    }
}
