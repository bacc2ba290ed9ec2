"""Fast unit tests: config, request parsing, error mapping, image decoding, metrics."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import pickle
from pathlib import Path

import pytest
from PIL import Image

from r2t2.errors import NotFoundError
from serving.api.chat import parse_body, parse_chat_request
from serving.config import ADMIN_TOKEN_ENV, GenerationDefaults, ImageLimits, ServerConfig
from serving.api.errors import (
    ApiError,
    InternalError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    from_pipeline_error,
    to_api_error,
)
from serving.api.images import decode_data_url, load_image
from serving.api.metrics import ServingMetrics

LIMITS = ImageLimits(max_encoded_bytes=50_000, max_pixels=10_000)


def data_url(size: tuple[int, int] = (16, 16), fmt: str = "PNG", mime: str | None = None) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt)
    return f"data:{mime or 'image/' + fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def body(**extra: object) -> bytes:
    content = [{"type": "text", "text": " what shape? "}, {"type": "image_url", "image_url": {"url": data_url()}}]
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}], **extra}).encode()


# --- config -----------------------------------------------------------------------------------------
def test_config_defaults_yaml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    default = ServerConfig()
    assert (default.host, default.port, default.backend, default.admin_token) == ("127.0.0.1", 8000, "vllm", None)
    assert not default.images.allow_remote_urls
    path = tmp_path / "server.yaml"
    path.write_text("backend: torch\nport: 9000\n"
                    "generator: {autoscaling: {min_replicas: 1, max_replicas: 3}}\n")
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "s3cret")
    config = ServerConfig.from_yaml(path, port=9100)
    assert (config.backend, config.port) == ("torch", 9100)
    assert config.admin_token is not None and config.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    (entry,) = config.models
    assert config.pipeline_config(entry) == {"checkpoint": "embedded", "model_name": "r2t2-embedded",
                                             "index_dir": None, "r2t2": {}}
    options = config.generator.ray_options()
    assert options["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in options
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize("text", ["bakend: torch\n", "backend: tensorflow\n", "- a list\n",
                                  "generator: {autoscaling: {min_replicas: 4, max_replicas: 2}}\n",
                                  "models: [{name: m, pipeline: {r2t2: {strategy: none}}}]\n"])
def test_config_rejects_bad_files(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError):
        ServerConfig.from_yaml(path)


# --- request parsing --------------------------------------------------------------------------------
def test_parse_picks_question_image_options_and_sampling() -> None:
    request = parse_body(body(r2t2={"strategy": "ngd", "k": 3, "index": "mine"}, max_completion_tokens=5,
                              stream=True, stream_options={"include_usage": True}))
    job = parse_chat_request(request, ["m"], GenerationDefaults(temperature=0.0))
    assert job.question == "what shape?" and job.image_url.startswith("data:image/png")
    assert job.overrides == {"strategy": "ngd", "k": 3} and job.index == "mine"
    assert (job.sampling.max_tokens, job.sampling.temperature, job.stream, job.include_usage) == (5, 0.0, True, True)
    assert job.model == "m"
    assert not job.compare_with_none
    compared = parse_chat_request(parse_body(body(r2t2={"compare_with_none": True})), ["m"], GenerationDefaults())
    assert compared.compare_with_none and compared.overrides == {}  # not a re-routing option
    fixed = parse_chat_request(parse_body(body(r2t2={"strategy": "kernel", "alpha": 0.25})), ["m"], GenerationDefaults())
    assert fixed.overrides == {"strategy": "kernel", "alpha": 0.25}


@pytest.mark.parametrize("raw,param,fragment", [
    (b"{not json", None, "not valid JSON"),
    (b"", None, "empty"),
    (body(frequency_penalty=2.5), "frequency_penalty", "less than or equal to 2"),
    (body(n=9), "n", "less than or equal to 8"),
    (body(seed=-1), "seed", "greater than or equal to 0"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
    (body(top_logprobs=2), None, "logprobs=true"),
    (body(response_format={"type": "json_object"}), "response_format", "free text"),
    (body(tools=[{"type": "function", "function": {"name": "f"}}]), "tools", "tool calling is not supported"),
    (body(tool_choice="auto"), "tool_choice", "tool calling is not supported"),
    (body(logit_bias={"1": 5}), "logit_bias", "not supported"),
    (body(r2t2={"strategy": "best"}), "r2t2.strategy", "'ngd'"),
    (body(r2t2={"k": 0}), "r2t2.k", "greater than or equal"),
    (body(r2t2={"alpha": 1.5}), "r2t2.alpha", "less than or equal to 1"),
    (body(r2t2={"nonsense": 1}), "r2t2.nonsense", "not supported"),
    (body(max_tokens=3, max_completion_tokens=3), None, "not both"),
    # Values of another JSON type than the document states are refused, not coerced.
    (body(stream=0), "stream", "valid boolean"),
    (body(max_tokens=True), "max_tokens", "valid integer"),
    (body(max_tokens=2.5), "max_tokens", "valid integer"),
    (body(r2t2={"answer_check": 0}), "r2t2.answer_check", "valid boolean"),
    (body(r2t2={"k": "5"}), "r2t2.k", "valid integer"),
    (body(stream_options={"include_usage": True}), None, "stream=true"),
    # Empty texts are refused where the document says so (a pattern), naming the text.
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": " "}]}).encode(), "messages.0.content",
     "the text is empty"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}).encode(),
     "messages.0.content.0.text", "the text is empty"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}).encode(),
     "messages.0.content.0", "does not match"),
    (json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": ""}}]}]}).encode(), "messages.0.content.0.image_url.url", "at least 1"),
])
def test_parse_body_errors_name_the_field(raw: bytes, param: str | None, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(raw)
    assert caught.value.param == param and fragment in caught.value.message
    assert caught.value.status == 400


def test_integral_numbers_are_integers_as_json_schema_counts_them() -> None:
    request = parse_body(body(max_tokens=3.0, n=2.0, seed=7.0, r2t2={"k": 4.0, "lm_layers": [1.0], "lr": 0.5}))
    assert (request.max_tokens, request.n, request.seed) == (3, 2, 7)
    assert request.r2t2.k == 4 and request.r2t2.lm_layers == (1,) and request.r2t2.lr == 0.5
    assert all(isinstance(v, int) for v in (request.max_tokens, request.n, request.seed, request.r2t2.k))


IMAGE = {"type": "image_url", "image_url": {"url": "data:x"}}


@pytest.mark.parametrize("messages,fragment,param", [
    ([{"role": "assistant", "content": "hi"}], "the last message must be the user's question", "messages.0.role"),
    ([{"role": "user", "content": [IMAGE]}], "no question", "messages.0.content"),
    ([{"role": "user", "content": [{"type": "text", "text": "q"}, IMAGE, IMAGE]}], "at most one image_url",
     "messages.0.content"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": [IMAGE]}, {"role": "user", "content": "q"}],
     "only user messages may hold an image", "messages.1.content"),
])
def test_chat_shape_errors(messages: list, fragment: str, param: str) -> None:
    request = parse_body(json.dumps({"model": "m", "messages": messages}).encode())
    with pytest.raises(InvalidRequest, match=fragment) as caught:
        parse_chat_request(request, ["m"], GenerationDefaults())
    assert caught.value.param == param


@pytest.mark.parametrize("messages,question", [
    ([{"role": "user", "content": "hello"}], "hello"),
    ([{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}], "x"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
      {"role": "user", "content": [{"type": "text", "text": " what can you "}, {"type": "text", "text": "do?"}]}],
     "what can you do?"),
])
def test_a_conversation_without_an_image_asks_its_question_alone(messages: list, question: str) -> None:
    body = {"model": "m", "messages": messages, "n": 2, "logprobs": True, "stream": True,
            "r2t2": {"strategy": "ngd", "target": "lm", "index": "mine", "compare_with_none": True}}
    job = parse_chat_request(parse_body(json.dumps(body).encode()), ["m"], GenerationDefaults())
    assert (job.question, job.image_url) == (question, None)
    # Accepted as they are: the re-routing options are ignored downstream, the rest apply to the answer.
    assert job.overrides == {"strategy": "ngd", "target": "lm"} and job.index == "mine" and job.compare_with_none
    assert (job.choices, job.sampling.logprobs, job.stream) == (2, 0, True)


def test_a_conversation_asks_its_last_question_about_its_latest_image() -> None:
    first, second = data_url((8, 8)), data_url((12, 12))
    messages = [{"role": "system", "content": "answer in one word"},
                {"role": "user", "content": [{"type": "text", "text": "what shape?"},
                                             {"type": "image_url", "image_url": {"url": first}}]},
                {"role": "assistant", "content": "circle"},
                {"role": "user", "content": [{"type": "text", "text": "and this one?"},
                                             {"type": "image_url", "image_url": {"url": second}}]},
                {"role": "assistant", "content": "square"},
                {"role": "user", "content": "which colour is it?"}]
    job = parse_chat_request(parse_body(json.dumps({"model": "m", "messages": messages}).encode()), ["m"],
                             GenerationDefaults())
    assert (job.question, job.image_url) == ("which colour is it?", second)


def test_openai_sampling_fields_reach_the_sampling_options() -> None:
    request = parse_body(body(stop="</s>", seed=3, logprobs=True, top_logprobs=2, n=3, presence_penalty=0.5,
                              frequency_penalty=-0.5, user="u-1", response_format={"type": "text"}, tools=[],
                              tool_choice="none", max_completion_tokens=4))
    job = parse_chat_request(request, ["m"], GenerationDefaults())
    sampling = job.sampling
    assert (sampling.stop, sampling.seed, sampling.logprobs, sampling.presence_penalty, sampling.frequency_penalty,
            sampling.max_tokens, job.choices) == (("</s>",), 3, 2, 0.5, -0.5, 4, 3)
    plain = parse_chat_request(parse_body(body(logprobs=False, stop=["a", "b"])), ["m"], GenerationDefaults())
    assert plain.sampling.logprobs is None and plain.sampling.stop == ("a", "b") and plain.choices == 1
    assert parse_chat_request(parse_body(body(logprobs=True)), ["m"], GenerationDefaults()).sampling.logprobs == 0


def test_unknown_model_is_404_listing_the_served_models() -> None:
    with pytest.raises(NotFound) as caught:
        parse_chat_request(parse_body(body()), ["first", "second"], GenerationDefaults())
    assert caught.value.message == "model 'm' is not served here; served models: first, second"
    assert caught.value.body()["error"] == {"message": caught.value.message, "type": "not_found_error",
                                             "param": "model", "code": "model_not_found"}


# --- error mapping ----------------------------------------------------------------------------------
def test_error_mapping_and_pickling() -> None:
    assert from_pipeline_error(NotFoundError("index 'x' does not exist")).status == 404
    assert from_pipeline_error(ValueError("k must be positive")).status == 400
    assert from_pipeline_error(RuntimeError("boom")) is None
    internal = to_api_error(RuntimeError("secret detail"))
    assert isinstance(internal, InternalError) and "secret" not in internal.message and internal.status == 500
    again = pickle.loads(pickle.dumps(PayloadTooLarge("big", param="p", code="c")))
    assert isinstance(again, PayloadTooLarge) and (again.message, again.param, again.code) == ("big", "p", "c")


def test_ray_task_error_is_unwrapped() -> None:
    from ray.exceptions import RayTaskError

    cause = NotFound("gone", param="r2t2.index")
    wrapped = RayTaskError("prepare", "traceback text", cause)
    assert to_api_error(wrapped) is cause


# --- images -----------------------------------------------------------------------------------------
def test_decode_valid_images_to_rgb() -> None:
    image = decode_data_url(data_url((20, 10)), LIMITS)
    assert image.mode == "RGB" and image.size == (20, 10)
    assert decode_data_url(data_url(fmt="JPEG"), LIMITS).size == (16, 16)
    assert asyncio.run(load_image(data_url(), LIMITS)).size == (16, 16)


@pytest.mark.parametrize("url,error,fragment", [
    (data_url((200, 200)), PayloadTooLarge, "pixels"),
    ("data:image/png;base64," + "A" * 80_000, PayloadTooLarge, "limit"),
    (data_url(mime="image/jpeg"), UnsupportedMediaType, "declared"),
    (data_url(mime="text/plain"), UnsupportedMediaType, "image/*"),
    (data_url(mime="image/tiff"), UnsupportedMediaType, "unsupported"),
    ("data:image/png;base64,!!!!", InvalidRequest, "base64"),
    ("data:image/png," + "x", InvalidRequest, "base64"),
    ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(), InvalidRequest, "readable"),
    ("file:///etc/passwd", InvalidRequest, "data: URL"),
    ("https://example.com/cat.png", InvalidRequest, "disabled"),
])
def test_bad_images_are_4xx(url: str, error: type[ApiError], fragment: str) -> None:
    with pytest.raises(error, match=fragment) as caught:
        asyncio.run(load_image(url, LIMITS))
    assert 400 <= caught.value.status < 500


def test_truncated_png_is_corrupt() -> None:
    raw = base64.b64decode(data_url((64, 64)).split(",", 1)[1])
    url = "data:image/png;base64," + base64.b64encode(raw[: len(raw) // 2]).decode()
    with pytest.raises(InvalidRequest):
        decode_data_url(url, ImageLimits())


def test_decompression_bomb_guard_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # PIL's own guard fires first when it is stricter than our check.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(PayloadTooLarge):
        decode_data_url(data_url((64, 64)), ImageLimits())


def test_remote_images_fetched_with_cap_when_allowed() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    png = base64.b64decode(data_url((8, 8)).split(",", 1)[1])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            payload = png if self.path == "/ok.png" else b"\0" * 100_000
            self.send_response(200)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        allowed = ImageLimits(max_encoded_bytes=50_000, allow_remote_urls=True, remote_timeout_s=5)
        base = f"http://127.0.0.1:{server.server_port}"
        assert asyncio.run(load_image(base + "/ok.png", allowed)).size == (8, 8)
        with pytest.raises(PayloadTooLarge):
            asyncio.run(load_image(base + "/huge.png", allowed))
    finally:
        server.shutdown()
        thread.join()


# --- metrics ----------------------------------------------------------------------------------------
def test_metrics_render_counts() -> None:
    metrics = ServingMetrics()
    metrics.observe_success("ngd", 0.5, {"encode": 0.1, "reroute": 0.2, "generate": 0.2, "total": 0.5}, True)
    metrics.observe_error("none", 413, "PayloadTooLarge")
    text = metrics.render().decode()
    assert 'r2t2_requests_total{status="200",strategy="ngd"} 1.0' in text
    assert 'r2t2_reroute_fallbacks_total{strategy="ngd"} 1.0' in text
    assert 'r2t2_errors_total{type="PayloadTooLarge"} 1.0' in text
    assert 'r2t2_stage_latency_seconds_count{stage="reroute",strategy="ngd"} 1.0' in text
    assert 'stage="total"' not in text
    assert "strategy=" not in ServingMetrics().render().decode()  # each ingress replica counts on its own


# --- admin auth -------------------------------------------------------------------------------------
def test_require_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.api.auth import require_admin
    from serving.api.errors import Forbidden, Unauthorized

    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    with pytest.raises(Forbidden, match="disabled") as disabled:
        require_admin(ServerConfig(), "Bearer anything")
    assert disabled.value.status == 403
    config = ServerConfig(admin_token="tok-123")
    require_admin(config, "Bearer tok-123")
    for header in (None, "", "Bearer tok-12", "Basic tok-123", "tok-123"):
        with pytest.raises(Unauthorized) as caught:
            require_admin(config, header)
        assert caught.value.status == 401


def test_served_context_is_the_model_s_own_unless_capped(tmp_path: Path) -> None:
    from serving.backends import model_length

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 128}))
    assert model_length(ServerConfig(), str(tmp_path)) == 128
    assert model_length(ServerConfig(max_model_len=64), str(tmp_path)) == 64
    assert model_length(ServerConfig(max_model_len=4096), str(tmp_path)) == 128  # never more than the model has


def test_retried_makes_a_call_again_only_when_its_replica_was_lost() -> None:
    from ray.exceptions import ActorDiedError

    from serving.api.errors import ServiceUnavailable
    from serving.deployments.retry import retried

    calls: list[int] = []

    def failing(times: int, error: Exception):
        async def call() -> str:
            calls.append(1)
            if len(calls) <= times:
                raise error
            return "answer"
        return call

    assert asyncio.run(retried(failing(2, ActorDiedError()), "re-router", backoff_s=0.001)) == "answer"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(InvalidRequest):  # the request's own error: not retried
        asyncio.run(retried(failing(1, InvalidRequest("bad")), "re-router", backoff_s=0.001))
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(ServiceUnavailable, match="re-router replica was lost 3 times"):
        asyncio.run(retried(failing(5, ActorDiedError()), "re-router", attempts=3, backoff_s=0.001))
    assert len(calls) == 3
