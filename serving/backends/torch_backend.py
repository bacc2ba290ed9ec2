"""Generation with plain transformers: the fallback where vLLM is unavailable.

It handles one request at a time (no continuous batching) and yields each completion as a single
delta, so it is slower under load but needs nothing beyond torch. A request's LM rows are applied by
r2t2's router hooks (r2t2/model/lm_routing.py), the same rule vLLM's extension applies.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import torch

from r2t2.compat import install_torchvision_fix
from r2t2.engine_prompt import PROMPT_EMBEDS
from serving.backends.protocol import (Delta, FinishReason, LmRows, LmShape, SamplingOptions, TokenLogprob,
                                       check_prompt_embeds)


class TorchBackend:
    """`AutoModelForCausalLM.generate(inputs_embeds=...)` in a worker thread."""

    def __init__(self, lm_path: str, max_model_len: int, engine_input: str = PROMPT_EMBEDS) -> None:
        install_torchvision_fix()  # transformers imports torchvision, which needs the fix first
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if engine_input != PROMPT_EMBEDS:
            raise ValueError(f"the torch backend generates from prompt embeddings only; this model's engine input "
                             f"is {engine_input!r}: serve it with backend: vllm")

        self._model = AutoModelForCausalLM.from_pretrained(lm_path, dtype=torch.float32).eval()
        self._tokenizer = AutoTokenizer.from_pretrained(lm_path)
        self._shape = LmShape.of(lm_path)
        self.applies_lm_rows: bool = self._shape.experts > 0
        self.hidden_size: int = self._model.config.hidden_size
        self.max_model_len: int = max_model_len
        eos = self._model.generation_config.eos_token_id
        self._eos_ids: set[int] = set() if eos is None else set(eos if isinstance(eos, list) else [eos])
        # One generation at a time: two would only split the same cores and both run slower.
        self._lock = threading.Lock()
        self._closed = False

    def _generate_blocking(self, embeds: torch.Tensor, options: SamplingOptions, lm_rows: LmRows | None) -> Delta:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from r2t2.model.lm_routing import LmRouting, install_router_hooks, routing_at

        sampling = {} if options.greedy else {"temperature": options.temperature, "top_p": options.top_p}
        penalties = _Penalties(options.presence_penalty, options.frequency_penalty)
        routing = None
        if lm_rows is not None:
            layers = tuple(sorted(lm_rows.layers))
            install_router_hooks(self._model, layers)
            routing = LmRouting(layers, rows=torch.tensor([[lm_rows.layers[layer] for layer in layers]]),
                                answer_from=embeds.shape[0] - 1, positions=lm_rows.positions)
        with self._lock, torch.inference_mode(), routing_at(routing):
            if options.seed is not None:
                torch.manual_seed(options.seed)  # under the lock: no other generation draws from it meanwhile
            output = self._model.generate(
                inputs_embeds=embeds.unsqueeze(0),
                attention_mask=torch.ones(1, embeds.shape[0], dtype=torch.long),
                max_new_tokens=options.max_tokens,
                do_sample=not options.greedy,
                pad_token_id=next(iter(self._eos_ids), 0),
                logits_processor=LogitsProcessorList([penalties] if penalties.active else []),
                stopping_criteria=StoppingCriteriaList([_StopText(self._tokenizer, options.stop)] if options.stop else []),
                return_dict_in_generate=True,
                output_logits=options.logprobs is not None,
                **sampling,
            )
        # With only inputs_embeds given, generate returns the new tokens alone.
        token_ids = output.sequences[0].tolist()
        finish: FinishReason = "stop" if token_ids and token_ids[-1] in self._eos_ids else "length"
        text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
        cut = min((at for at in (text.find(stop) for stop in options.stop) if at >= 0), default=None)
        if cut is not None:  # like vLLM: the text ends before the stop string
            text, finish = text[:cut], "stop"
        logprobs = () if options.logprobs is None else self._logprobs(token_ids, output.logits, options.logprobs)
        return Delta(text, len(token_ids), finish, logprobs, None if routing is None else routing.ran)

    def _logprobs(self, token_ids: list[int], logits: tuple[torch.Tensor, ...], top: int) -> tuple[TokenLogprob, ...]:
        """Log-probabilities of the raw distribution at each step (as vLLM reports them)."""
        found = []
        for token_id, step in zip(token_ids, logits):
            logp = torch.log_softmax(step[0].float(), dim=-1)
            best = torch.topk(logp, top) if top else None
            alternatives = () if best is None else tuple(
                (self._tokenizer.decode([i]), float(v)) for v, i in zip(best.values.tolist(), best.indices.tolist()))
            found.append(TokenLogprob(self._tokenizer.decode([token_id]), float(logp[token_id]), alternatives))
        return tuple(found)

    async def generate(self, prompt: torch.Tensor, options: SamplingOptions,
                       lm_rows: LmRows | None = None) -> AsyncIterator[Delta]:
        """Yield the whole completion as one delta, computed off the event loop."""
        if self._closed:
            raise RuntimeError("the torch backend was shut down")
        embeds = check_prompt_embeds(prompt, self.hidden_size, self.max_model_len, options)
        if lm_rows is not None:
            self._shape.check(lm_rows, None if self.applies_lm_rows else "the language model has no MoE layers")
        yield await asyncio.to_thread(self._generate_blocking, embeds, options, lm_rows)

    async def check_health(self) -> None:
        """Raise once shut down; the model lives in this process, so nothing else can die."""
        if self._closed:
            raise RuntimeError("the torch backend was shut down")

    def shutdown(self) -> None:
        """Refuse further requests; idempotent (the model is freed with the replica's process)."""
        self._closed = True


class _Penalties:
    """OpenAI's presence and frequency penalties over the tokens generated so far (HF has no such processor)."""

    def __init__(self, presence: float, frequency: float) -> None:
        self.presence, self.frequency = presence, frequency
        self.active = presence != 0.0 or frequency != 0.0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # With inputs_embeds only, input_ids holds the generated tokens alone.
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, torch.ones_like(input_ids, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class _StopText:
    """Ends generation once the decoded text holds a stop string (HF's own stop_strings needs a BPE vocabulary)."""

    def __init__(self, tokenizer, stop: tuple[str, ...]) -> None:  # noqa: ANN001 (any HF tokenizer)
        self.tokenizer, self.stop = tokenizer, stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: object) -> torch.BoolTensor:
        text = self.tokenizer.decode(input_ids[0], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stop)])
