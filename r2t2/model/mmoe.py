"""The multimodal MoE of every config-described family: vision experts -> router -> projectors ->
sparse-MoE language model.

Implements `r2t2.model.protocol.ServableModel`: the base routing [L, E] of a query, a batched loss of
labelled samples under any routing (differentiable with respect to the routing only), prompts for the
generator, and reference encoding for indexes.

The routing's rows are the router's vision rows (one mixture over the experts per group of soft tokens)
followed by one row per LM routing layer (`lm_routing_layers`): the LM router's distribution at the answer
position of that layer (routing/layout.py). The matrix is as wide as the wider of the two.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerFast

from r2t2.data.answers import same_answer
from r2t2.data.sample import Sample
from r2t2.errors import QuestionTooLong
from r2t2.model.batches import LabelledBatch
from r2t2.model.config import ModelConfig
from r2t2.model.experts import ExpertBank
from r2t2.model.language_model import build_lm, prefix_lm
from r2t2.model.lm_routing import LmRouting, install_router_hooks, pinned_rows, routing_at
from r2t2.model.projector import ExpertProjectors
from r2t2.engine_prompt import PROMPT_EMBEDS, LmPositions
from r2t2.model.protocol import EncodedBatch, EncodedQuery, RoutedQuery
from r2t2.model.question_encoder import MINILM_NAME, MiniLMEmbedder
from r2t2.model.router import Router
from r2t2.model.tokenizer import ANS, BOS, SEP
from r2t2.routing.layout import LayoutRow, RoutingLayout

IMAGE_SIZE = 64  # every image is brought to this size before the experts take their own view


def images_to_pixels(images: Sequence[Image.Image]) -> Tensor:
    """PIL images (any size/mode) -> [B, 3, 64, 64] float in [0, 1]."""
    arrays = [
        np.asarray(img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                   if img.size != (IMAGE_SIZE, IMAGE_SIZE) or img.mode != "RGB" else img)
        for img in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)


class MultimodalMoE(nn.Module):
    """The whole model. Frozen at serving time: re-routing only ever changes routing tensors."""

    def __init__(self, config: ModelConfig, tokenizer: PreTrainedTokenizerFast, root: Path | None = None) -> None:
        """`root`: the directory relative expert weight files are read from (a checkpoint's)."""
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        num_experts, hidden = len(config.experts), config.lm["hidden_size"]
        self.experts = ExpertBank(config.experts, config.feature_dim, root)
        self.router = Router(config.router, len(tokenizer), num_experts, config.feature_dim,
                             config.question_embedding_dim, tokenizer.pad_token_id)
        self.projectors = ExpertProjectors(num_experts, config.feature_dim, hidden, config.router.rows)
        # The LM also reads the question through a frozen pretrained sentence embedder, one soft token:
        # like a pretrained LLM it then copes with rewording; the router sees only its configured inputs.
        self.question_encoder = MiniLMEmbedder()
        self.question_proj = nn.Linear(config.question_embedding_dim, hidden)
        self.use_lm(build_lm(config, tokenizer))
        self.routing_layout = _layout(config)
        self._vision_shape = config.routing_shape
        self._lm_rows = list(range(len(config.router.rows), len(config.router.rows) + config.lm_routing_layers))
        self.max_positions: int = config.lm["max_position_embeddings"]
        self._bos, self._sep, self._ans = (tokenizer.convert_tokens_to_ids(t) for t in (BOS, SEP, ANS))
        # Set by `load_model` for a saved checkpoint: where its files are and what its weights hash to.
        self.checkpoint_dir: Path | None = None
        self.lm_path: Path | None = None
        self.fingerprint: str | None = None

    engine_input = PROMPT_EMBEDS  # the LM reads the image as soft tokens: the engine is fed prompt embeddings

    @property
    def r2t2_defaults(self) -> dict:
        """The re-routing settings the family config serves this model with (over the shipped ones)."""
        return self.config.r2t2_defaults

    @property
    def family(self) -> str:
        """The family name: its served id is r2t2-<family>, its default index is named after it."""
        return self.config.name

    def use_lm(self, lm: nn.Module) -> None:
        """Make `lm` the language model (a loaded checkpoint replaces the freshly built one), with the routers of
        its LM routing layers hooked so that routing rows can be read and applied."""
        self.lm = lm
        install_router_hooks(lm, self.config.lm_routing_indices)

    # ---- routing protocol -------------------------------------------------------------------------
    @property
    def routing_shape(self) -> tuple[int, int]:
        return self.routing_layout.shape

    def base_routing(self, query: LabelledBatch) -> Tensor:
        """The router's routing [L, E] for a single query (its answer tokens are not used): the vision rows,
        and the LM's own routing at the answer position under them."""
        with torch.no_grad():
            return self.full_routing(query[[0]], self.route(query[[0]]))[0]

    def full_routing(self, batch: LabelledBatch, vision: Tensor) -> Tensor:
        """[B, L, E]: the vision rows [B, Lv, Ev] padded, and below them each LM routing layer's distribution at
        the answer position ([ANS], the last prompt token) of each sample's prompt under those vision rows."""
        layers, width = self.routing_shape
        full = torch.zeros(len(batch), layers, width, device=vision.device, dtype=vision.dtype)
        full[:, :vision.shape[1], :vision.shape[2]] = vision
        if not self._lm_rows:
            return full
        lm = batch.memo("lm", lambda: prefix_lm(self.lm))
        cache = batch.memo("prefix", lambda: lm.prefix(*self._prefix_embeds(batch)))
        soft = self.soft_tokens(batch.features, vision)
        suffix = torch.cat([soft, self._embed_ids([self._ans]).expand(len(batch), 1, -1)], dim=1)
        answer = torch.zeros(suffix.shape[:2], dtype=torch.bool, device=suffix.device)
        answer[:, -1] = True
        with torch.no_grad(), routing_at(LmRouting(self.config.lm_routing_indices, answer, capture=True)) as seen:
            lm.logits(cache, suffix, keep_from=suffix.shape[1] - 1)
        for row, layer in zip(self._lm_rows, self.config.lm_routing_indices):
            full[:, row, :self.config.lm_experts] = seen.captured[layer].to(full.dtype)
        return full

    def routing_loss(self, batch: LabelledBatch, routing: Tensor, pinned: Sequence[bool] | None = None,
                     lm_positions: LmPositions = "answer") -> Tensor:
        """Mean answer cross-entropy per sample [B] under `routing` ([L, E] or [B, L, E]).

        The re-routing path: experts' tokens and the question prefix are computed once per batch, each
        call runs only soft tokens + answer through the LM. Same value as `answer_loss`. The vision rows are
        always applied; an LM row only where `pinned` says so, at the answer position ([ANS] and the answer
        tokens that follow it, or [ANS] alone with `lm_positions` "first"); the other LM layers keep their
        routers.
        """
        lm = batch.memo("lm", lambda: prefix_lm(self.lm))
        projected = batch.memo("projected", lambda: self.projectors.project(batch.features).detach())
        cache = batch.memo("prefix", lambda: lm.prefix(*self._prefix_embeds(batch)))
        embed = self.lm.get_input_embeddings()
        answers = batch.answer_ids
        tail = batch.memo("tail", lambda: embed(torch.cat(
            [torch.full((len(batch), 1), self._ans, device=answers.device), answers[:, :-1]], dim=1)).detach())
        soft = self.projectors.mix(projected, self._vision(routing))
        suffix = torch.cat([soft, tail], dim=1)
        answer = torch.zeros(suffix.shape[:2], dtype=torch.bool, device=suffix.device)
        answer[:, soft.shape[1]:] = True
        with routing_at(pinned_rows(self.routing_layout, routing, pinned, answer, lm_positions)):
            logits = lm.logits(cache, suffix, keep_from=soft.shape[1])
        targets = answers.masked_fill(answers == self.tokenizer.pad_token_id, -100)
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-100)
        return token_loss.sum(1) / (targets != -100).sum(1).clamp_min(1)

    def _vision(self, routing: Tensor) -> Tensor:
        """The vision rows [..., Lv, Ev] of a full routing; any other shape is a vision-only routing (an
        adapter may route the soft tokens with more rows of its own) and is returned as it is."""
        if tuple(routing.shape[-2:]) != tuple(self.routing_shape):
            return routing
        layers, experts = self._vision_shape
        return routing[..., :layers, :experts]

    def _embed_ids(self, ids: Sequence[int]) -> Tensor:
        return self.lm.get_input_embeddings()(torch.as_tensor(list(ids), device=self.device))

    def join_batches(self, batches: Sequence[LabelledBatch]) -> LabelledBatch:
        """One batch of every sample of `batches`, in order: lets re-routing evaluate the neighbours of
        several requests in one `routing_loss` call."""
        return LabelledBatch.join(batches, self.tokenizer.pad_token_id)

    def _prefix_embeds(self, batch: LabelledBatch) -> tuple[Tensor, Tensor]:
        """Every sample's prefix, right-padded [B, P, h], and the real lengths [B]."""
        with torch.no_grad():
            prefixes = [self._prefix(batch, b) for b in range(len(batch))]
        return pad_sequence(prefixes, batch_first=True), torch.as_tensor([len(p) for p in prefixes], device=self.device)

    # ---- building blocks --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights are (`.to(device)` moves them); every tensor the model builds goes there too."""
        return self.question_proj.weight.device

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """Pooled features of every expert [B, E, d]; what indexes cache for reference samples."""
        with torch.no_grad():
            return self.experts(images_to_pixels(images).to(self.device))

    def tokenize_questions(self, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Ids [B, max_question_tokens] (cut and right-padded to it: rows of any batch line up) and lengths [B]."""
        limit, pad = self.config.max_question_tokens, self.tokenizer.pad_token_id
        ids = [torch.as_tensor(self.tokenizer(q, add_special_tokens=False).input_ids[:limit] or
                               [self.tokenizer.unk_token_id]) for q in questions]
        padded = pad_sequence(ids, batch_first=True, padding_value=pad)
        return F.pad(padded, (0, limit - padded.shape[1]), value=pad), torch.as_tensor([len(i) for i in ids])

    def tokenize_answers(self, answers: Sequence[str]) -> Tensor:
        """[B, max_answer_tokens]: word ids cut to what the model generates (a longer answer is one it gets wrong,
        never an error), end-of-sequence, padding (one width, so the batches of an index build always join)."""
        limit = self.config.max_answer_tokens - 1
        ids = [torch.as_tensor(self.tokenizer(a, add_special_tokens=False).input_ids[:limit]
                               + [self.tokenizer.eos_token_id]) for a in answers]
        return F.pad(pad_sequence(ids, batch_first=True, padding_value=self.tokenizer.pad_token_id),
                     (0, limit + 1 - max(len(i) for i in ids)), value=self.tokenizer.pad_token_id)

    def embed_questions(self, questions: Sequence[str]) -> Tensor:
        return torch.from_numpy(self.question_encoder.embed_texts(list(questions)))

    def labelled_batch(self, images: Sequence[Image.Image], questions: Sequence[str],
                       answers: Sequence[str], features: Tensor | None = None,
                       question_embeddings: Tensor | None = None) -> LabelledBatch:
        question_ids, lengths = self.tokenize_questions(questions)
        feats = self.encode_images(images) if features is None else features
        sentence = self.embed_questions(questions) if question_embeddings is None else question_embeddings
        return LabelledBatch(feats, question_ids, lengths, self.tokenize_answers(answers), sentence).to(self.device)

    def route(self, batch: LabelledBatch) -> Tensor:
        """Base routing for a whole batch, [B, L, E]."""
        return self.router(batch.question_ids, batch.features, batch.question_embeddings)

    @property
    def max_question_tokens(self) -> int:
        """The longest question the router and LM read; reference questions beyond it are cut when indexed."""
        return self.config.max_question_tokens

    def encode_query(self, image: Image.Image, question: str, answer: str | None = None) -> EncodedQuery:
        """A batch of one; the MiniLM question embedding it holds doubles as the neighbour-search key.

        A question longer than `max_question_tokens` raises QuestionTooLong instead of being cut.
        """
        self._check_question(question)
        sentence = self.embed_questions([question])
        batch = self.labelled_batch([image], [question], [answer or ""], question_embeddings=sentence)
        return EncodedQuery(batch, sentence[0].numpy(), MINILM_NAME)

    def encode_queries(self, images: Sequence[Image.Image], questions: Sequence[str],
                       answers: Sequence[str | None]) -> list[RoutedQuery | Exception]:
        """Many requests in one pass: the experts, the question encoder, the router and the LM rows' forward
        each run once over all of them, which is what makes a batch cheaper than its requests alone.

        Slot i holds what `encode_query` and `base_routing` give request i alone (to float rounding), or
        that request's own error (QuestionTooLong); the others are encoded without it.
        """
        outcomes: list[RoutedQuery | Exception | None] = []
        for question in questions:
            try:
                self._check_question(question)
                outcomes.append(None)
            except QuestionTooLong as err:
                outcomes.append(err)
        valid = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if valid:
            sentences = self.embed_questions([questions[i] for i in valid])
            features = self.encode_images([images[i] for i in valid])
            singles = [self.labelled_batch([images[i]], [questions[i]], [answers[i] or ""], features=features[[j]],
                                           question_embeddings=sentences[[j]]) for j, i in enumerate(valid)]
            joined = self.join_batches(singles)
            with torch.no_grad():
                routings = self.full_routing(joined, self.route(joined))
            for j, i in enumerate(valid):
                outcomes[i] = RoutedQuery(EncodedQuery(singles[j], sentences[j].numpy(), MINILM_NAME), routings[j])
        return outcomes  # type: ignore[return-value]  (every slot is filled above)

    def _check_question(self, question: str) -> None:
        """QuestionTooLong for a question longer than the router and the LM read (never cut silently)."""
        tokens = len(self.tokenizer(question, add_special_tokens=False).input_ids)
        if tokens > self.max_question_tokens:
            raise QuestionTooLong(tokens, self.max_question_tokens)

    def answer(self, query: LabelledBatch, routing: Tensor, pinned: Sequence[bool] | None = None,
               lm_positions: LmPositions = "answer") -> list[str]:
        return self.generate(query, routing, pinned=pinned, lm_positions=lm_positions)

    def soft_tokens(self, features: Tensor, routing: Tensor) -> Tensor:
        """[B, T, h] visual tokens under `routing` ([L, E] or [B, L, E]; only its vision rows count)."""
        return self.projectors.mix(self.projectors.project(features), self._vision(routing))

    def _prefix(self, batch: LabelledBatch, b: int) -> Tensor:
        """[BOS] (sentence token) question [SEP] as embeddings [P, h]: everything routing cannot change."""
        return self._question_prefix(batch.question_ids[b, :int(batch.question_lengths[b])],
                                     batch.question_embeddings[b])

    def _question_prefix(self, question_ids: Tensor, sentence: Tensor) -> Tensor:
        """[BOS] (sentence token) question [SEP] as embeddings [P, h], from the question's ids and its sentence
        embedding."""
        embed = self.lm.get_input_embeddings()
        words = torch.cat([question_ids.to(self.device), torch.as_tensor([self._sep], device=self.device)])
        projected = self.question_proj(sentence.to(self.device)).unsqueeze(0)
        return torch.cat([embed(torch.as_tensor([self._bos], device=self.device)), projected, embed(words)])

    def _prompt(self, batch: LabelledBatch, b: int, soft: Tensor) -> Tensor:
        """The full prompt [S, h]: prefix, soft visual tokens, [ANS]."""
        ans = self.lm.get_input_embeddings()(torch.as_tensor([self._ans], device=self.device))
        return torch.cat([self._prefix(batch, b), soft, ans])

    def question_prompt(self, question: str) -> Tensor:
        """The prompt [S, h] of a question asked without an image: the prefix and [ANS], with no visual tokens
        between them, so the LM reads the question alone (QuestionTooLong beyond `max_question_tokens`)."""
        self._check_question(question)
        ids, lengths = self.tokenize_questions([question])
        with torch.no_grad():
            prefix = self._question_prefix(ids[0, :int(lengths[0])], self.embed_questions([question])[0])
            ans = self.lm.get_input_embeddings()(torch.as_tensor([self._ans], device=self.device))
            return torch.cat([prefix, ans])

    def prompt_embeds(self, batch: LabelledBatch, routing: Tensor) -> list[Tensor]:
        """Prompt embeddings per sample, exactly what a generation backend (vLLM) is fed."""
        with torch.no_grad():
            soft = self.soft_tokens(batch.features, routing)
            return [self._prompt(batch, b, soft[b]) for b in range(len(batch))]

    def engine_prompts(self, batch: LabelledBatch, routing: Tensor) -> list[Tensor]:
        """What the vLLM engine is fed: the prompt embeddings."""
        return self.prompt_embeds(batch, routing)

    def answer_loss(self, batch: LabelledBatch, routing: Tensor) -> Tensor:
        """Mean answer cross-entropy per sample [B] through the full transformers forward.

        Differentiable with respect to everything (training uses it); `routing_loss` is the fast path.
        """
        soft = self.soft_tokens(batch.features, routing)
        embed = self.lm.get_input_embeddings()
        pad = self.tokenizer.pad_token_id
        sequences, targets = [], []
        for b in range(len(batch)):
            prompt = self._prompt(batch, b, soft[b])
            answer = batch.answer_ids[b][batch.answer_ids[b] != pad]
            sequences.append(torch.cat([prompt, embed(answer[:-1])]))
            labels = torch.full((len(prompt) + len(answer) - 1,), -100, dtype=torch.long)
            labels[len(prompt) - 1:] = answer
            targets.append(labels)
        inputs = pad_sequence(sequences, batch_first=True)
        labels = pad_sequence(targets, batch_first=True, padding_value=-100)
        mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in sequences], batch_first=True)
        logits = self.lm(inputs_embeds=inputs, attention_mask=mask).logits
        token_loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
        counts = (labels != -100).sum(1).clamp_min(1)
        return token_loss.sum(1) / counts

    @torch.no_grad()
    def generate(self, batch: LabelledBatch, routing: Tensor, max_new_tokens: int = 4,
                 pinned: Sequence[bool] | None = None, lm_positions: LmPositions = "answer") -> list[str]:
        """Greedy answers under `routing` ([L, E] or [B, L, E]); the torch path, used by eval. LM rows that
        `pinned` applies govern the last prompt token and every generated token (the last prompt token alone
        with `lm_positions` "first"), as in the vLLM engine."""
        prompts = self.prompt_embeds(batch, routing)
        prompt_lengths = torch.as_tensor([len(p) for p in prompts])
        embed = self.lm.get_input_embeddings()
        eos = self.tokenizer.eos_token_id
        outputs: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        for _ in range(max_new_tokens):
            seqs = [torch.cat([p, embed(torch.as_tensor(o, dtype=torch.long))]) if o else p
                    for p, o in zip(prompts, outputs)]
            lengths = torch.as_tensor([len(s) for s in seqs])
            mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
            positions = torch.arange(mask.shape[1])[None, :]
            answer = (positions >= prompt_lengths[:, None] - 1) & (positions < lengths[:, None])
            with routing_at(pinned_rows(self.routing_layout, routing, pinned, answer.to(self.device), lm_positions)):
                logits = self.lm(inputs_embeds=pad_sequence(seqs, batch_first=True), attention_mask=mask).logits
            next_ids = logits[torch.arange(len(seqs)), lengths - 1].argmax(-1).tolist()
            for b, token in enumerate(next_ids):
                if not done[b]:
                    if token == eos:
                        done[b] = True
                    else:
                        outputs[b].append(token)
            if all(done):
                break
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in outputs]

    # ---- reference encoder (what an index build needs) ----------------------------------------------
    def encode_references(self, samples: Sequence[Sample]) -> EncodedBatch:
        """Answer reference samples with the base router; keep what NGD needs to skip the experts later."""
        batch = self.labelled_batch([s.image for s in samples], [s.question for s in samples],
                                    [s.answer for s in samples])
        with torch.no_grad():
            routing = self.full_routing(batch, self.route(batch))
        answers = self.generate(batch, routing)
        correct = np.asarray([same_answer(a, s.answer) for a, s in zip(answers, samples)], dtype=bool)
        return EncodedBatch(payload=batch.payload(), routings=routing.float().cpu().numpy(), correct=correct)

    def reference_batch(self, payload: dict) -> LabelledBatch:
        """The inverse of what `encode_references` stored, for rows an index search returned."""
        return LabelledBatch.from_payload(payload).to(self.device)

    def image_embedding(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Concatenated, per-expert normalised pooled features: an image embedding for neighbour search."""
        feats = F.normalize(self.encode_images(images), dim=-1).flatten(1)
        return F.normalize(feats, dim=-1).cpu().numpy()


def _layout(config: ModelConfig) -> RoutingLayout:
    """Vision rows over the experts, then one row per LM routing layer over that layer's experts."""
    experts = tuple(config.expert_names)
    lm_experts = tuple(f"e{e}" for e in range(config.lm_experts)) if config.lm_routing_layers else ()
    return RoutingLayout(tuple(LayoutRow(name, "vision", experts) for name in config.row_names) + tuple(
        LayoutRow(f"lm.layer{layer}", "lm", lm_experts, layer=layer) for layer in config.lm_routing_indices))
