"""Generation with vLLM's asynchronous engine, fed what the served model's `engine_input` says.

A model whose language model reads the image as soft tokens is fed prompt embeddings; a published
image-text model that vLLM runs whole (Qwen3-VL-MoE) is fed its chat text and image, which vLLM's own
multimodal processor for the architecture turns into the model's input.

vLLM batches concurrent requests continuously, which is why it is the default backend. Its engine
core runs in a separate process; when that process dies, `check_health` raises and Ray Serve
restarts the replica. A request's LM rows are applied inside the engine by r2t2's vLLM extension
(serving/vllm_plugin), enabled for the architectures it supports, eager or with CUDA graphs.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from r2t2.engine_prompt import PROMPT_EMBEDS, TEXT_IMAGE, EnginePrompt
from serving.backends.protocol import (Delta, LmReport, LmRoutingRefused, LmRows, LmShape, SamplingOptions,
                                       TokenLogprob, check_prompt_embeds, check_text_image)
from serving.backends.vllm_process import worker_in_engine_process
from serving.config import VllmOptions
from serving.lifecycle.child_env import prepare_server_process
from serving.vllm_plugin import EXTRA_KEY
from serving.vllm_plugin.plugin import ROUTABLE


def lm_routing_refusal(shape: LmShape, options: VllmOptions) -> str | None:
    """Why this engine cannot apply LM rows (None: it can)."""
    if shape.architecture not in ROUTABLE:
        return (f"LM routing is not available for {shape.architecture}: r2t2's vLLM extension routes "
                f"{', '.join(sorted(ROUTABLE))}")
    return None


# One image per request, and no video: vLLM then reserves no memory for inputs r2t2 never sends.
_ONE_IMAGE = {"image": 1, "video": 0}
ENGINE_STOP_S = 1.5  # the engine core's grace after SIGTERM when the generator stops


class VllmBackend:
    """An `AsyncLLM` engine fed prompt embeddings or text and an image (and LM routing where the model allows)."""

    def __init__(self, lm_path: str, options: VllmOptions, max_model_len: int,
                 engine_input: str = PROMPT_EMBEDS) -> None:
        # The engine core is a fresh interpreter that imports transformers: it needs the torchvision fix too, also
        # where no `r2t2 serve` prepared this replica's environment (`serve run`).
        prepare_server_process()
        # vLLM reads this when the engine is configured; its default is sized for a dedicated host.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(options.kv_cache_gib)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        if engine_input not in (PROMPT_EMBEDS, TEXT_IMAGE):
            raise ValueError(f"unknown engine input {engine_input!r}")
        self._engine_input = engine_input
        self._shape = LmShape.of(lm_path)
        self._refusal = lm_routing_refusal(self._shape, options)
        self.applies_lm_rows: bool = self._refusal is None
        routing: dict[str, Any] = {} if self._refusal is not None else {
            "hf_overrides": {"architectures": [ROUTABLE[self._shape.architecture]]},
            "logits_processors": ["serving.vllm_plugin.slots:RoutingSlots"],
            "worker_extension_cls": "serving.vllm_plugin.worker.RoutingReports",
        }
        inputs: dict[str, Any] = {"enable_prompt_embeds": True} if engine_input == PROMPT_EMBEDS else {
            "limit_mm_per_prompt": _ONE_IMAGE}
        args = AsyncEngineArgs(
            model=lm_path,
            **inputs,
            dtype=options.dtype,
            max_model_len=max_model_len,
            enforce_eager=options.enforce_eager,
            gpu_memory_utilization=options.gpu_memory_utilization,
            disable_log_stats=True,
            **routing,
        )
        with worker_in_engine_process():
            self._engine: AsyncLLM | None = AsyncLLM.from_engine_args(args)
        model_config = self._engine.model_config
        self.hidden_size: int = model_config.get_hidden_size()
        self.max_model_len: int = model_config.max_model_len
        self._dtype = model_config.dtype

    def _running_engine(self):  # noqa: ANN202 (vLLM type imported lazily)
        if self._engine is None:
            raise RuntimeError("the vLLM backend was shut down")
        return self._engine

    async def generate(self, prompt: EnginePrompt, options: SamplingOptions,
                       lm_rows: LmRows | None = None) -> AsyncIterator[Delta]:
        """Stream deltas of one completion; the request is aborted if the caller stops iterating.

        With `lm_rows` the last delta carries the engine's report of the experts they made it run.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        engine = self._running_engine()
        engine_prompt, prompt_len = self._engine_prompt(prompt, options)
        request_id = f"r2t2-{uuid.uuid4().hex}"
        extra = None
        if lm_rows is not None:
            rows = self._shape.check(lm_rows, self._refusal)
            applied = {"layers": {str(layer): weights for layer, weights in rows.layers.items()},
                       "positions": rows.positions}
            extra = {EXTRA_KEY: {"key": request_id, "prompt_len": prompt_len, **applied}}
            # Keys and values computed under these rows must never be reused by a request without them (or with
            # them at other positions).
            engine_prompt["cache_salt"] = hashlib.sha256(json.dumps(applied).encode()).hexdigest()
        params = SamplingParams(
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=1.0 if options.greedy else options.top_p,
            stop=list(options.stop) or None,
            seed=options.seed,
            logprobs=options.logprobs,
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
            output_kind=RequestOutputKind.DELTA,
            extra_args=extra,
        )
        async for output in engine.generate(engine_prompt, params, request_id=request_id):
            completion = output.outputs[0]
            finish = completion.finish_reason if output.finished else None
            if finish not in (None, "stop", "length"):
                raise RuntimeError(f"vLLM ended the request with finish_reason={finish!r}")
            logprobs = () if options.logprobs is None else _token_logprobs(completion.token_ids, completion.logprobs,
                                                                           options.logprobs)
            report = await self._report(request_id, lm_rows) if output.finished and lm_rows is not None else None
            yield Delta(completion.text, len(completion.token_ids), finish, logprobs, report)

    async def router_distributions(self, prompt: EnginePrompt, layers: tuple[int, ...]) -> dict[int, list[float]]:
        """Each of `layers`' router distribution at the prompt's last token, as the engine's prefill computes it
        (a request's base LM routing, so a re-router needs none of the layers before its rows). One token is
        generated; the prompt's keys and values stay in the prefix cache for the answer that follows."""
        from vllm import SamplingParams

        if self._refusal is not None:
            raise LmRoutingRefused(self._refusal)
        engine = self._running_engine()
        engine_prompt, prompt_len = self._engine_prompt(prompt, SamplingOptions(max_tokens=1))
        request_id = f"r2t2-base-{uuid.uuid4().hex}"
        extra = {EXTRA_KEY: {"key": request_id, "prompt_len": prompt_len, "layers": {}, "positions": "first",
                             "capture": list(layers)}}
        async for _ in engine.generate(engine_prompt, SamplingParams(max_tokens=1, temperature=0.0, extra_args=extra),
                                       request_id=request_id):
            pass
        reports = await engine.collective_rpc("r2t2_routing_reports", args=([request_id],))
        found = next((report[request_id] for report in reports if request_id in report), {})
        rows = {int(layer): ran["router"] for layer, ran in found.items() if "router" in ran}
        if set(rows) != set(layers):
            raise RuntimeError(f"the engine read the routers of layers {sorted(rows)}, not {sorted(layers)}")
        return rows

    def _engine_prompt(self, prompt: EnginePrompt, options: SamplingOptions) -> tuple[dict[str, Any], int]:
        """vLLM's prompt for one request, validated, and its length in positions."""
        if self._engine_input == TEXT_IMAGE:
            checked = check_text_image(prompt, self.max_model_len, options)
            images = {} if checked.image is None else {"multi_modal_data": {"image": checked.image}}
            return {"prompt": checked.text, **images}, checked.tokens
        embeds = check_prompt_embeds(prompt, self.hidden_size, self.max_model_len, options)
        return {"prompt_embeds": embeds.to(self._dtype)}, int(embeds.shape[0])

    async def _report(self, request_id: str, lm_rows: LmRows) -> LmReport:
        """What the engine's workers ran for this request's LM rows (every worker routes the same). An answer
        the rows did not govern is never passed on as if they had."""
        reports = await self._running_engine().collective_rpc("r2t2_routing_reports", args=([request_id],))
        found = next((report[request_id] for report in reports if request_id in report), {})
        report = {int(layer): ran for layer, ran in found.items()}
        if set(report) != set(lm_rows.layers):
            raise RuntimeError(f"the engine applied LM rows to layers {sorted(report)}, not {sorted(lm_rows.layers)}")
        return report

    async def check_health(self) -> None:
        """Raise when the engine process is dead or the engine was shut down."""
        await self._running_engine().check_health()

    def shutdown(self) -> None:
        """Stop the engine core process, SIGKILL after ENGINE_STOP_S (it holds nothing worth waiting for, and
        vLLM's own 5 s grace alone would outlast the replica's); idempotent."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown(timeout=ENGINE_STOP_S)


def _token_logprobs(token_ids, per_token, top: int) -> tuple[TokenLogprob, ...]:  # noqa: ANN001 (vLLM types)
    """vLLM's {token id: Logprob} per generated token as TokenLogprobs (the chosen token, then the `top` best)."""
    found = []
    for token_id, candidates in zip(token_ids, per_token or []):
        chosen = candidates[token_id]
        best = sorted(candidates.values(), key=lambda c: c.rank)[:top]
        found.append(TokenLogprob(chosen.decoded_token or "", float(chosen.logprob),
                                  tuple((c.decoded_token or "", float(c.logprob)) for c in best)))
    return tuple(found)
