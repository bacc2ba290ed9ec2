"""A published image-text MoE served through the adapter protocol: Qwen3-VL-MoE, read by transformers.

The whole model is transformers' `Qwen3VLMoeForConditionalGeneration` from a plain Hugging Face directory
(the shipped `qwen3vl` checkpoint, or `Qwen/Qwen3-VL-30B-A3B-Instruct` downloaded). It has no vision
mixture: its routing rows are the language model's last MoE layers (C3PO's pathway), each the layer's
router distribution at the answer position, the last prompt token. Rows are read and applied by the router
hooks of `r2t2.model.lm_routing`; the generation engine is vLLM running the same directory, fed the chat
text and the image through its own multimodal processor (`engine_input` TEXT_IMAGE), with the rows applied
inside it by r2t2's vLLM extension.

Every image is brought to one square size first (the size the processor picks for a square image of the
family's `image_pixels`), so that a reference stored in an index is exactly the input it was answered with
and every sample has the same number of image tokens.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from transformers import AutoConfig, AutoProcessor

from r2t2.data.answers import same_answer
from r2t2.data.sample import Sample
from r2t2.errors import QuestionTooLong
from r2t2.model.chat_batch import ChatBatch
from r2t2.model.config import ImageTextConfig, ModelConfigError
from r2t2.model.fingerprint import FINGERPRINT
from r2t2.model.hf_checkpoint import FAMILY, REFERENCES, fingerprint
from r2t2.model.lm_routing import LmRouting, install_router_hooks, pinned_rows, routing_at
from r2t2.model.lm_tail import LmTail, TailStates, capture_states, deepstack_in_tail, left_padded, right_padded
from r2t2.engine_prompt import TEXT_IMAGE, LmPositions, TextImagePrompt
from r2t2.model.protocol import EncodedBatch, EncodedQuery
from r2t2.model.qwen3vl import load_checkpoint, prompt, sparse_layers, square_side
from r2t2.model.tokenizer import IM_END, IMAGE_PAD
from r2t2.routing.layout import LayoutRow, RoutingLayout

# What a model loads: all of it, the LM from its first routed layer on, or no weights (routings only).
Weights = Literal["full", "tail", "none"]
DEFAULT_LM_ROWS = 5  # C3PO's critical layers: the last five MoE layers (all of them when there are fewer)


def is_image_text_checkpoint(directory: Path) -> bool:
    """Whether `directory` is a Hugging Face checkpoint of an architecture this adapter serves."""
    path = Path(directory) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "Qwen3VLMoeForConditionalGeneration" in (data.get("architectures") or [])


class ImageTextModel:
    """A frozen Qwen3-VL-MoE checkpoint as a `ServableModel` with one LM routing row per routed MoE layer."""

    engine_input = TEXT_IMAGE

    def __init__(self, directory: Path, lm_rows: int = DEFAULT_LM_ROWS, dtype: torch.dtype = torch.float32,
                 weights: Weights = "full") -> None:
        """`dtype` is the weights' (float32, or bfloat16 as the published checkpoint ships them: half the memory);
        routing rows, losses and captured distributions are float32 either way. `weights` "tail" loads only the
        language model from its first routed layer on (lm_tail.py): enough for the losses of references whose
        index kept their states, while a query's base routing comes from the engine's prefill
        (`base_from_engine`); what needs the whole model (answers, index builds, a query's own losses) is
        refused, naming it. `weights` "none" loads no weights at all: kernel regression with a fixed `alpha` and
        mean shift need only the references' routings and the engine's base routing; every neighbour loss (NGD,
        the oracle, kernel's line search, the guard) is refused too."""
        directory = Path(directory)
        hf_config = AutoConfig.from_pretrained(directory)
        text = hf_config.text_config
        sparse = sparse_layers(text)
        self._layers = tuple(sparse[-lm_rows:]) if lm_rows else ()
        if not self._layers:
            raise ModelConfigError("lm_rows", f"{directory} routes no MoE layer (lm_rows={lm_rows})")
        if weights == "full":
            self.model, self.processor = load_checkpoint(directory, dtype)
            install_router_hooks(self.model, self._layers)
            self._tail = LmTail.of(self.model, self._layers[0])  # what a reference's losses run, from cached states
        elif weights == "tail":
            self.model, self.processor = None, AutoProcessor.from_pretrained(directory)
            self._tail = LmTail.load(directory, self._layers[0], dtype)
            install_router_hooks(self._tail.text, self._layers)
        elif weights == "none":
            self.model, self.processor, self._tail = None, AutoProcessor.from_pretrained(directory), None
        else:
            raise ModelConfigError("weights", f"must be full, tail or none, got {weights!r}")
        self._weights = weights
        self._device, self._dtype = torch.device("cpu"), dtype  # where and how a model without weights says it is
        self.base_from_engine: bool = weights != "full"
        self._hidden = text.hidden_size
        family = directory / FAMILY  # the r2t2 family config a trained checkpoint carries
        config = ImageTextConfig.from_dict(json.loads(family.read_text()), family) if family.is_file() else None
        self.family: str = config.name if config is not None else directory.name
        self.r2t2_defaults: dict = config.r2t2_defaults if config is not None else {}  # the family's, as served
        own = directory / REFERENCES  # the checkpoint's own reference set (a skeleton's), its default index's
        self.default_references: Path | None = own if own.is_file() else None
        self.tokenizer = self.processor.tokenizer
        experts = tuple(f"e{e}" for e in range(text.num_experts))
        self.routing_layout = RoutingLayout(tuple(LayoutRow(f"lm.layer{layer}", "lm", experts, layer=layer)
                                                  for layer in self._layers))
        self.max_positions: int = text.max_position_embeddings
        self.max_question_tokens: int = config.max_question_tokens if config is not None else 256
        self._max_answer_tokens = config.max_answer_tokens if config is not None else 16
        self._side = square_side(config.image_pixels if config is not None
                                  else self.processor.image_processor.size["shortest_edge"],
                                  hf_config.vision_config)
        self._image_token = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        self._end = self.tokenizer.convert_tokens_to_ids(IM_END)
        self._pad = self.tokenizer.pad_token_id
        self._prompt_width = self._prompt_ids([Image.new("RGB", (self._side, self._side))], [""])[0].shape[1] \
            + self.max_question_tokens
        self._states_width = self._prompt_width + self._max_answer_tokens - 1  # a reference's cached positions
        self.lm_path: Path = directory
        self.fingerprint: str = fingerprint(directory)
        recorded = directory / FINGERPRINT
        if recorded.exists() and recorded.read_text().strip() != self.fingerprint:
            raise ModelConfigError("fingerprint", f"the weights in {directory} hash to {self.fingerprint}, not the "
                                                  f"recorded {recorded.read_text().strip()}: files changed or corrupt")

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights this process holds (what an index build would copy into each worker)."""
        modules = ([self.model] if self.model is not None else [self._tail.text, self._tail.head] if self._tail
                   else [])
        held = {id(p): p for module in modules for p in module.parameters() if p.device.type != "meta"}
        return sum(p.numel() * p.element_size() for p in held.values())

    @property
    def device(self) -> torch.device:
        return self._device if self._tail is None else self._tail.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype if self._tail is None else self._tail.head.weight.dtype

    def to(self, target: torch.device | str | torch.dtype) -> "ImageTextModel":
        """Move the weights to a device (e.g. a GPU; every batch's inputs follow them there) or a dtype."""
        if self.model is not None:
            self.model.to(target)
        elif self._tail is not None:
            self._tail.to(target)
        elif isinstance(target, torch.dtype):
            self._dtype = target
        else:
            self._device = torch.device(target)
        return self

    def _whole(self, need: str) -> torch.nn.Module:
        """The whole model, which `need` runs; refused (ValueError) when only the tail was loaded."""
        if self.model is None:
            loaded = (f"only the language model's layers from lm.layer{self._layers[0]} on" if self._tail is not None
                      else "no weights")
            raise ValueError(f"{need} needs the whole model, and this one loaded {loaded} (weights: {self._weights})")
        return self.model

    # ---- RoutedModel ----------------------------------------------------------------------------------
    @property
    def routing_shape(self) -> tuple[int, int]:
        return self.routing_layout.shape

    def base_routing(self, query: ChatBatch) -> Tensor:
        """[L, E]: each routed layer's router distribution at the last prompt token of the query."""
        return self._answer_routing(query[[0]])[0]

    @property
    def routed_layers(self) -> tuple[int, ...]:
        """The decoder layers of the routing rows, in row order (what an engine reads a base routing from)."""
        return self._layers

    def routing_loss(self, batch: ChatBatch, routing: Tensor, pinned: Sequence[bool] | None = None,
                     lm_positions: LmPositions = "answer") -> Tensor:
        """Mean answer cross-entropy per sample [B] with the pinned LM rows of `routing` ([L, E] or [B, L, E])
        in place at the answer position (the last prompt token and the answer's tokens, or the last prompt
        token alone with `lm_positions` "first"); differentiable in the routing only. Unpinned rows leave
        their layers to the routers.

        The rows change nothing before the answer position, so the image and most of the prompt are run once
        per batch (their keys and values kept on it) and each call runs only the last tokens: those holding
        the answer positions of every sample. References whose index kept their states at the first re-routed
        layer run only the layers from there on (lm_tail.py)."""
        if batch.states is not None:
            if self._tail is None:
                raise ValueError("a neighbour loss (NGD, the oracle, kernel's line search, the guard) needs the "
                                 "language model's layers from the first routed one on, and this re-router "
                                 "loaded no weights (weights: none): send kernel with a fixed alpha and guard=false, "
                                 "or meanshift")
            prompt = batch.memo("state tail", lambda: self._state_tail(batch))
            with routing_at(pinned_rows(self.routing_layout, routing, pinned, prompt.answer, lm_positions)):
                logits, _ = self._tail.forward(prompt.inputs, copy.deepcopy(prompt.past))
        else:
            self._whole("a loss over samples without cached states (a query, or an index built before states were kept)")
            prompt = batch.memo("answer tail", lambda: self._answer_tail(batch))
            with routing_at(pinned_rows(self.routing_layout, routing, pinned, prompt.answer, lm_positions)):
                logits = self.model(**prompt.inputs, past_key_values=copy.deepcopy(prompt.past), use_cache=True).logits
        token_loss = F.cross_entropy(logits.transpose(1, 2).float(), prompt.targets, reduction="none", ignore_index=-100)
        return token_loss.sum(1) / (prompt.targets != -100).sum(1).clamp_min(1)

    def _answer_tail(self, batch: ChatBatch) -> _AnswerTail:
        """Run every sample's sequence (prompt, then the answer's tokens but the last) up to the tail that holds
        all the samples' answer positions; what a routing-loss call needs to run that tail alone."""
        inputs, answer = self._inputs(batch, with_answers=True)
        ids = inputs["input_ids"]
        length = ids.shape[1]
        targets = torch.full_like(ids, -100)
        for b, count in enumerate(batch.answer_lengths.tolist()):
            targets[b, length - count:] = batch.answer_ids[b, :count].to(targets.device)  # predicted from the last prompt token on
        split = int(answer.any(0).nonzero().min())  # the first position that is some sample's answer position
        images = inputs["mm_token_type_ids"]
        positions, _ = self.model.model.get_rope_index(ids, images, image_grid_thw=inputs["image_grid_thw"],
                                                       attention_mask=inputs["attention_mask"])
        if bool(images[:, split:].any()):  # a short prompt's image reaches the tail: every call runs it all
            return _AnswerTail({**inputs, "position_ids": positions}, None, answer, targets)
        with torch.no_grad():
            past = self.model(input_ids=ids[:, :split], attention_mask=inputs["attention_mask"][:, :split],
                              position_ids=positions[..., :split], pixel_values=inputs["pixel_values"],
                              image_grid_thw=inputs["image_grid_thw"], mm_token_type_ids=images[:, :split],
                              use_cache=True, logits_to_keep=1).past_key_values
        tail = {"input_ids": ids[:, split:], "attention_mask": inputs["attention_mask"],
                "position_ids": positions[..., split:]}
        return _AnswerTail(tail, past, answer[:, split:], targets[:, split:])

    def _state_tail(self, batch: ChatBatch) -> _AnswerTail:
        """`_answer_tail` from cached states: every sequence left-padded to end together, run through the tail
        layers up to the first answer position of any sample."""
        states, answer, targets = left_padded(batch, self._image_token, self._hidden, self.dtype,
                                              len(self._tail.deepstack_layers))
        states = TailStates(*(t.to(self.device) for t in (states.hidden, states.positions, states.attention)),
                            tuple(d.to(self.device) for d in states.deepstack))
        answer, targets = answer.to(self.device), targets.to(self.device)
        split = int(answer.any(0).nonzero().min())
        with torch.no_grad():
            _, past = self._tail.forward(states[:split], head=False)
        return _AnswerTail(states[split:], past, answer[:, split:], targets[:, split:])

    def join_batches(self, batches: Sequence[ChatBatch]) -> ChatBatch:
        """One batch of every sample: the neighbours of several requests in one `routing_loss` call."""
        return ChatBatch.join(batches, self._pad)

    # ---- ServableModel --------------------------------------------------------------------------------
    def encode_query(self, image: Image.Image, question: str, answer: str | None = None) -> EncodedQuery:
        """A batch of one; a question longer than `max_question_tokens` is refused (QuestionTooLong)."""
        self._check_question(question)
        return EncodedQuery(self._batch([image], [question], [answer or ""]))

    def question_prompt(self, question: str) -> TextImagePrompt:
        """A question asked without an image: the chat turn holds the question alone (no image placeholder)
        and the engine reads it as the language model's text."""
        self._check_question(question)
        text = prompt(self.processor, question, with_image=False)
        return TextImagePrompt(text, None, len(self.processor(text=[text])["input_ids"][0]))

    def _check_question(self, question: str) -> None:
        """QuestionTooLong for a question longer than `max_question_tokens` (never cut silently)."""
        tokens = len(self.tokenizer(question, add_special_tokens=False).input_ids)
        if tokens > self.max_question_tokens:
            raise QuestionTooLong(tokens, self.max_question_tokens)

    def engine_prompts(self, batch: ChatBatch, routing: Tensor) -> list[TextImagePrompt]:
        """The chat text and image of each query: the routing is all LM rows, which travel beside the prompt."""
        if batch.questions is None:
            raise ValueError("engine prompts are built for queries (encode_query), not for stored references")
        return [TextImagePrompt(prompt(self.processor, question), image, int(length))
                for question, image, length in zip(batch.questions, batch.pil_images(), batch.prompt_lengths)]

    @torch.no_grad()
    def answer(self, batch: ChatBatch, routing: Tensor, pinned: Sequence[bool] | None = None,
               lm_positions: LmPositions = "answer") -> list[str]:
        """Greedy answers with transformers' `generate`; pinned LM rows govern the last prompt token and every
        generated token (the last prompt token alone with `lm_positions` "first"), as in the vLLM engine."""
        inputs, _ = self._inputs(batch, with_answers=False)
        length = inputs["input_ids"].shape[1]
        applied = pinned_rows(self.routing_layout, routing, pinned,
                              torch.zeros(len(batch), length, dtype=torch.bool, device=self.device), lm_positions)
        if applied is not None:
            applied.answer, applied.answer_from = None, length - 1  # marked per call, as the key/value cache grows
        with routing_at(applied):
            output = self._whole("an answer of the torch model").generate(**inputs, max_new_tokens=self._max_answer_tokens, do_sample=False)
        return [text.strip() for text in self.processor.batch_decode(output[:, length:], skip_special_tokens=True)]

    def encode_references(self, samples: Sequence[Sample]) -> EncodedBatch:
        """Answer reference samples with the routers; store their images, prompts, answers and LM routing."""
        questions = [self._cut(s.question) for s in samples]
        batch = self._batch([s.image for s in samples], questions, [s.answer for s in samples])
        routing, batch = self._with_states(batch)
        answers = self.answer(batch, routing)
        correct = np.asarray([same_answer(a, s.answer) for a, s in zip(answers, samples)], dtype=bool)
        return EncodedBatch(batch.payload(), routing.cpu().numpy(), correct)

    def _with_states(self, batch: ChatBatch) -> tuple[Tensor, ChatBatch]:
        """One forward of the references with their answers: their routing [B, L, E] at the last prompt token,
        and the batch holding their states at the first re-routed layer (right-padded, lm_tail.py)."""
        model = self._whole("an index build")
        inputs, answer = self._inputs(batch, with_answers=True)
        ids = inputs["input_ids"]
        positions, _ = model.model.get_rope_index(ids, inputs["mm_token_type_ids"],
                                                       image_grid_thw=inputs["image_grid_thw"],
                                                       attention_mask=inputs["attention_mask"])
        at_last_prompt_token = LmRouting(self._layers, answer, capture=True, positions="first")
        with torch.no_grad(), capture_states(model, self._tail.first) as seen, routing_at(at_last_prompt_token):
            model(**inputs, position_ids=positions, logits_to_keep=1)
        routing = torch.stack([at_last_prompt_token.captured[layer] for layer in self._layers], dim=1).float()
        hidden = seen["hidden"].cpu()
        deepstack = [d.cpu() for d in deepstack_in_tail(seen, self._tail, tuple(hidden.shape))]
        return routing, right_padded(batch, hidden, positions.cpu(), deepstack, inputs["attention_mask"].sum(1).tolist(),
                                     (ids == self._image_token).cpu(), self._states_width)

    def reference_batch(self, payload: dict[str, np.ndarray]) -> ChatBatch:
        return ChatBatch.from_payload(payload)

    # ---- inputs -------------------------------------------------------------------------------------
    def _answer_routing(self, batch: ChatBatch) -> Tensor:
        """[B, L, E] float32: each routed layer's router distribution at each sample's last prompt token."""
        inputs, _ = self._inputs(batch, with_answers=False)
        last = torch.zeros(inputs["input_ids"].shape, dtype=torch.bool, device=self.device)
        last[:, -1] = True
        with torch.no_grad(), routing_at(LmRouting(self._layers, last, capture=True)) as seen:
            self._whole("a base routing computed in the re-router")(**inputs, logits_to_keep=1)
        return torch.stack([seen.captured[layer] for layer in self._layers], dim=1).float()

    def _inputs(self, batch: ChatBatch, with_answers: bool) -> tuple[dict[str, Tensor], Tensor]:
        """The model's keyword inputs, each sequence left-padded so that all end together: the prompt, and with
        `with_answers` the answer's tokens after it (the last one only as a target). Also the answer mask
        [B, S]: the last prompt token and the answer tokens after it."""
        sequences, answer_tokens = [], []
        for b in range(len(batch)):
            sequence = batch.prompt_ids[b, :int(batch.prompt_lengths[b])]
            fed = int(batch.answer_lengths[b]) - 1 if with_answers else 0
            sequences.append(torch.cat([sequence, batch.answer_ids[b, :fed]]))
            answer_tokens.append(fed + 1)
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(batch), length), self._pad, dtype=torch.long)
        attention = torch.zeros((len(batch), length), dtype=torch.long)
        answer = torch.zeros((len(batch), length), dtype=torch.bool)
        for b, (sequence, count) in enumerate(zip(sequences, answer_tokens)):
            input_ids[b, length - len(sequence):] = sequence
            attention[b, length - len(sequence):] = 1
            answer[b, length - count:] = True
        pixels = batch.memo("pixels", lambda: self.processor.image_processor(images=batch.pil_images(),
                                                                             return_tensors="pt"))
        inputs = {"input_ids": input_ids, "attention_mask": attention,
                  "pixel_values": pixels["pixel_values"].to(self.dtype),
                  "image_grid_thw": pixels["image_grid_thw"], "mm_token_type_ids": (input_ids == self._image_token).int()}
        return {key: value.to(self.device) for key, value in inputs.items()}, answer.to(self.device)

    def _batch(self, images: Sequence[Image.Image], questions: Sequence[str], answers: Sequence[str]) -> ChatBatch:
        squares = [image.convert("RGB").resize((self._side, self._side), Image.BILINEAR) for image in images]
        prompt_ids, prompt_lengths = self._prompt_ids(squares, questions)
        # An answer longer than the model generates is cut to what it generates: the model cannot give it whole,
        # so it stays an answer the model gets wrong, never an error.
        answer_ids = [self.tokenizer(a, add_special_tokens=False).input_ids[:self._max_answer_tokens - 1]
                      + [self._end] for a in answers]
        answer_width = self._max_answer_tokens
        answer_tensor = torch.full((len(answers), answer_width), self._pad, dtype=torch.long)
        for b, ids in enumerate(answer_ids):
            answer_tensor[b, :len(ids)] = torch.as_tensor(ids)
        prompt_tensor = torch.full((len(questions), self._prompt_width), self._pad, dtype=torch.long)
        prompt_tensor[:, :prompt_ids.shape[1]] = prompt_ids[:, :self._prompt_width]
        return ChatBatch(torch.as_tensor(np.stack([np.asarray(s) for s in squares])), prompt_tensor, prompt_lengths,
                         answer_tensor, torch.as_tensor([len(ids) for ids in answer_ids]), tuple(questions))

    def _prompt_ids(self, images: Sequence[Image.Image], questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Right-padded chat prompt ids [B, P] (the image placeholder expanded by the processor) and lengths."""
        texts = [prompt(self.processor, question) for question in questions]
        side, self.tokenizer.padding_side = self.tokenizer.padding_side, "right"
        try:
            encoded = self.processor(images=list(images), text=texts, padding=True, return_tensors="pt")
        finally:
            self.tokenizer.padding_side = side
        return encoded["input_ids"], encoded["attention_mask"].sum(1)

    def _cut(self, question: str) -> str:
        """A reference question cut to `max_question_tokens` (a query that long is refused instead)."""
        ids = self.tokenizer(question, add_special_tokens=False).input_ids
        return question if len(ids) <= self.max_question_tokens else self.tokenizer.decode(
            ids[:self.max_question_tokens])


@dataclass(frozen=True)
class _AnswerTail:
    """A batch's sequences with everything before the answer positions already run (`past`, its keys and
    values; None when nothing could be run ahead): the keyword inputs of the rest, its answer marks and its
    targets (-100 where no answer token is predicted)."""

    inputs: dict[str, Tensor] | TailStates
    past: Any
    answer: Tensor  # [B, T] bool
    targets: Tensor  # [B, T]

