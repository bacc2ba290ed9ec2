"""The shipped Qwen3-VL-MoE checkpoint through the adapter protocol: what load_model gives for it reads and
applies LM rows with the router hooks, answers as plain transformers does, and round-trips through an index."""
import pytest
import torch

from r2t2.data import load_split
from r2t2.engine_prompt import TEXT_IMAGE, TextImagePrompt
from r2t2.errors import QuestionTooLong
from r2t2.model import ServableModel, load_model
from r2t2.model.image_text_model import ImageTextModel
from r2t2.model.lm_routing import pinned_rows, routing_at
from r2t2.model.qwen3vl import IGNORE, answer_routing, chat_inputs, generate_answers

SAMPLES = 12
STATE_FIELDS = ("states", "positions", "deepstack")  # what an index keeps of a reference for lm_tail.py


@pytest.fixture(scope="module")
def qwen3vl():
    torch.set_num_threads(1)  # beside other work on 2 cores, one thread is many times faster than two
    model = load_model("qwen3vl")
    samples = load_split("test", limit=SAMPLES, seed=7)
    return model, samples, model.encode_references(samples)


def test_load_model_serves_the_checkpoint_through_its_adapter(qwen3vl) -> None:
    model, _, _ = qwen3vl
    assert isinstance(model, ImageTextModel) and isinstance(model, ServableModel)
    assert model.engine_input == TEXT_IMAGE and model.family == "qwen3vl"
    assert model.routing_layout.names == ["lm.layer0", "lm.layer1", "lm.layer2", "lm.layer3"]
    assert {row.kind for row in model.routing_layout.rows} == {"lm"} and model.routing_shape == (4, 8)
    assert model.lm_path.name == "qwen3vl" and model.fingerprint == (model.lm_path / "FINGERPRINT").read_text().strip()


def test_routings_and_answers_are_what_plain_transformers_gives(qwen3vl) -> None:
    model, samples, encoded = qwen3vl
    images, questions = [s.image for s in samples], [s.question for s in samples]
    expected = answer_routing(model.model, chat_inputs(model.processor, images, questions))  # output_router_logits
    assert torch.allclose(torch.from_numpy(encoded.routings), expected, atol=1e-5)
    answers = generate_answers(model.model, model.processor, images, questions)
    assert list(encoded.correct) == [a == s.answer for a, s in zip(answers, samples)]
    batch = model.reference_batch(encoded.payload)
    assert model.answer(batch, torch.from_numpy(encoded.routings)) == answers


def _full_forward_loss(model: ImageTextModel, images, questions, answers, routing: torch.Tensor,
                       pinned: tuple[bool, ...] | None, positions: str = "answer") -> torch.Tensor:
    """The answer loss of one plain transformers forward over every whole sequence, the rows `pinned` names
    (None: none) applied at the last prompt token and the answer's tokens (each position that predicts one), or
    with `positions` "first" at the last prompt token alone."""
    inputs = chat_inputs(model.processor, images, questions, answers)
    labels = inputs["labels"][:, 1:]
    answer = torch.zeros_like(inputs["labels"], dtype=torch.bool)
    answer[:, :-1] = labels != IGNORE
    if positions == "first":
        answer = torch.zeros_like(answer).scatter(1, answer.int().argmax(1, keepdim=True), True)
    with routing_at(pinned_rows(model.routing_layout, routing, pinned, answer, "answer")):
        logits = model.model(**{k: v for k, v in inputs.items() if k != "labels"}).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=IGNORE)
    return loss.sum(1) / (labels != IGNORE).sum(1)


def test_routing_loss_is_the_answer_loss_and_moves_with_pinned_rows_only(qwen3vl) -> None:
    model, samples, encoded = qwen3vl
    batch = model.reference_batch(encoded.payload)
    routing = torch.from_numpy(encoded.routings)
    plain = _full_forward_loss(model, [s.image for s in samples], [s.question for s in samples],
                               [s.answer for s in samples], routing, None)  # no rows applied: the routers
    assert torch.allclose(model.routing_loss(batch, routing), plain, atol=1e-4)

    moved = torch.softmax(2 * torch.randn(routing.shape, generator=torch.Generator().manual_seed(0)), -1)
    moved.requires_grad_(True)
    assert torch.equal(model.routing_loss(batch, moved), model.routing_loss(batch, routing))  # unpinned: routers
    pinned = (False, False, True, True)
    loss = model.routing_loss(batch, moved, pinned=pinned)
    assert not torch.allclose(loss, plain, atol=1e-3)
    loss.sum().backward()
    assert moved.grad[:, 2:].abs().sum() > 0 and moved.grad[:, :2].abs().sum() == 0  # only the pinned rows
    changed = model.answer(batch, moved.detach(), pinned=(True,) * 4)
    assert changed != model.answer(batch, routing)


def test_routing_loss_runs_the_answer_tail_alone_and_equals_the_whole_forward(qwen3vl, monkeypatch) -> None:
    model, samples, encoded = qwen3vl
    batch = model.reference_batch(encoded.payload)
    moved = torch.softmax(2 * torch.randn(encoded.routings.shape, generator=torch.Generator().manual_seed(1)), -1)
    everything = (True,) * 4
    images, questions, answers = [s.image for s in samples], [s.question for s in samples], [s.answer for s in samples]
    assert torch.allclose(model.routing_loss(batch, moved, pinned=everything),
                          _full_forward_loss(model, images, questions, answers, moved, everything), atol=1e-5)
    # A reference's index kept its states at the first re-routed layer: its losses start there, and everything
    # before its first answer position ran once, ahead.
    assert batch.memo("state tail", lambda: None).past is not None
    older = model.reference_batch({k: v for k, v in encoded.payload.items() if k not in STATE_FIELDS})
    assert older.states is None  # an index built before states were kept: the image and question run once, ahead
    assert torch.equal(model.routing_loss(older, moved, pinned=everything), model.routing_loss(batch, moved, pinned=everything))
    assert older.memo("answer tail", lambda: None).past is not None

    # A checkpoint that answers in many tokens (the shipped family's answers are one word, one token): a long
    # answer beside a short question reaches back over that prompt's image, so every call runs the whole
    # sequences, with the same result.
    monkeypatch.setattr(model, "_max_answer_tokens", 16)
    images, questions, answers = images[:2], ["what?", questions[1]], [" ".join(["yes"] * 12), answers[1]]
    long_batch = model._batch(images, questions, answers)
    assert int(long_batch.answer_lengths[0]) == 13  # twelve words, then <|im_end|>
    rows = moved[:2]
    assert torch.allclose(model.routing_loss(long_batch, rows, pinned=everything),
                          _full_forward_loss(model, images, questions, answers, rows, everything), atol=1e-5)
    assert long_batch.memo("answer tail", lambda: None).past is None


def test_routing_loss_with_first_positions_equals_the_whole_forward_routed_there_alone(qwen3vl) -> None:
    """With `lm_positions` "first" only the last prompt token takes the rows; the answer's tokens keep their
    routers (so the loss of what follows the answer's first token differs from "answer"'s)."""
    model, samples, encoded = qwen3vl
    batch = model.reference_batch(encoded.payload)
    moved = torch.softmax(2 * torch.randn(encoded.routings.shape, generator=torch.Generator().manual_seed(2)), -1)
    everything = (True,) * 4
    images, questions, answers = [s.image for s in samples], [s.question for s in samples], [s.answer for s in samples]
    first = model.routing_loss(batch, moved, pinned=everything, lm_positions="first")
    assert torch.allclose(first, _full_forward_loss(model, images, questions, answers, moved, everything, "first"),
                          atol=1e-5)
    assert not torch.allclose(first, model.routing_loss(batch, moved, pinned=everything), atol=1e-5)


def test_queries_and_engine_prompts(qwen3vl) -> None:
    model, samples, encoded = qwen3vl
    query = model.encode_query(samples[0].image, samples[0].question).batch
    assert torch.allclose(model.base_routing(query), torch.from_numpy(encoded.routings[0]), atol=1e-5)
    (prompt,) = model.engine_prompts(query, model.base_routing(query))
    assert isinstance(prompt, TextImagePrompt) and prompt.text.count("<|image_pad|>") == 1
    assert prompt.tokens == int(query.prompt_lengths[0]) and prompt.image.size == (64, 64)
    with pytest.raises(QuestionTooLong):
        model.encode_query(samples[0].image, " ".join(["what"] * (model.max_question_tokens + 1)))
    joined = model.join_batches([model.reference_batch(encoded.payload)[[0, 1]], query])
    assert len(joined) == 3 and torch.equal(joined.prompt_ids[2], query.prompt_ids[0])


def test_a_question_alone_is_its_chat_turn_without_the_image(qwen3vl) -> None:
    model, samples, _ = qwen3vl
    query = model.encode_query(samples[0].image, samples[0].question).batch
    (full,) = model.engine_prompts(query, model.base_routing(query))
    alone = model.question_prompt(samples[0].question)
    assert alone.image is None and "<|image_pad|>" not in alone.text
    assert alone.text == full.text.replace("<|vision_start|><|image_pad|><|vision_end|>", "")
    assert alone.tokens == len(model.tokenizer(alone.text).input_ids) < full.tokens
    with pytest.raises(QuestionTooLong):
        model.question_prompt(" ".join(["what"] * (model.max_question_tokens + 1)))


def test_served_defaults_target_its_lm_rows(qwen3vl, tmp_path) -> None:
    from serving.pipeline.factory import serve_model

    model, _, _ = qwen3vl
    pipeline = serve_model(model, model.family, {"index_dir": str(tmp_path), "build_default_index": False})
    assert pipeline.defaults.target == "lm" and pipeline.info()["engine_input"] == TEXT_IMAGE
    with pytest.raises(ValueError, match="vision"):
        pipeline.config_for({"target": "vision"})


def test_references_keep_their_states_at_the_first_rerouted_layer(qwen3vl) -> None:
    """The index payload holds each reference's states entering the first re-routed layer (here layer 0, so the
    deepstack features added after it too); with fewer rows the tail starts later, drops the deepstack, and its
    losses and gradients are still the whole forward's."""
    model, samples, encoded = qwen3vl
    assert {"states", "positions", "deepstack"} <= set(encoded.payload)
    assert encoded.payload["states"].shape[:2] == (SAMPLES, encoded.payload["positions"].shape[2])
    assert encoded.payload["deepstack"].shape[:2] == (SAMPLES, 1)

    later = ImageTextModel(model.lm_path, lm_rows=2)  # rows lm.layer2, lm.layer3: the tail is 2 of 4 layers
    references = later.encode_references(samples)
    assert "deepstack" not in references.payload
    assert torch.allclose(torch.from_numpy(references.routings), torch.from_numpy(encoded.routings[:, 2:]), atol=1e-5)
    batch = later.reference_batch(references.payload)
    moved = torch.softmax(2 * torch.randn(references.routings.shape, generator=torch.Generator().manual_seed(3)), -1)
    moved.requires_grad_(True)
    images, questions, answers = [s.image for s in samples], [s.question for s in samples], [s.answer for s in samples]
    loss = later.routing_loss(batch, moved, pinned=(True, True))
    assert torch.allclose(loss, _full_forward_loss(later, images, questions, answers, moved, (True, True)), atol=1e-5)
    joined = later.join_batches([batch[[0, 1]], batch[[4]]])
    assert torch.allclose(later.routing_loss(joined, moved[[0, 1, 4]].detach(), pinned=(True, True)), loss[[0, 1, 4]].detach(),
                          atol=1e-5)
    loss.sum().backward()
    assert moved.grad.abs().sum() > 0


def test_bfloat16_weights_keep_bfloat16_states_and_float32_routings(tmp_path) -> None:
    model = load_model("qwen3vl", dtype=torch.bfloat16)
    assert model.model.dtype == torch.bfloat16
    samples = load_split("test", limit=4, seed=7)
    encoded = model.encode_references(samples)
    assert encoded.routings.dtype.name == "float32" and encoded.payload["states"].dtype.name == "uint16"
    batch = model.reference_batch(encoded.payload)
    assert batch.states.dtype == torch.bfloat16
    loss = model.routing_loss(batch, torch.from_numpy(encoded.routings), pinned=(True,) * 4)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    with pytest.raises(Exception, match="float32 only"):
        load_model("embedded", dtype=torch.bfloat16)


def test_a_model_holding_only_its_tail_re_routes_references_and_refuses_the_rest(qwen3vl) -> None:
    """`weights: tail` allocates the language model from the first routed layer on, alone; its reference losses
    are the whole model's, and what needs the rest (a base routing, answers, index builds, a query's loss) is
    refused naming it."""
    model, samples, encoded = qwen3vl
    tail = ImageTextModel(model.lm_path, weights="tail")
    assert tail.model is None and tail.base_from_engine and not model.base_from_engine
    assert tail.routed_layers == model.routed_layers == (0, 1, 2, 3)
    assert 0 < tail.weight_bytes < model.weight_bytes  # its vision tower and embeddings are never allocated
    moved = torch.softmax(2 * torch.randn(encoded.routings.shape, generator=torch.Generator().manual_seed(4)), -1)
    everything = (True,) * 4
    assert torch.equal(tail.routing_loss(tail.reference_batch(encoded.payload), moved, pinned=everything),
                       model.routing_loss(model.reference_batch(encoded.payload), moved, pinned=everything))
    query = tail.encode_query(samples[0].image, samples[0].question)
    assert tail.engine_prompts(query.batch, None)[0].text == model.engine_prompts(query.batch, None)[0].text
    older = tail.reference_batch({k: v for k, v in encoded.payload.items() if k not in STATE_FIELDS})
    for refused in (lambda: tail.base_routing(query.batch), lambda: tail.answer(query.batch, moved[0]),
                    lambda: tail.encode_references(samples[:1]), lambda: tail.routing_loss(older, moved, everything)):
        with pytest.raises(ValueError, match="needs the whole model"):
            refused()


def test_a_model_holding_no_weights_routes_from_references_alone_and_refuses_every_loss(qwen3vl) -> None:
    """`weights: none` allocates no weights: its references' routings and prompts are the whole model's, and every
    neighbour loss is refused naming the strategies that need none."""
    model, samples, encoded = qwen3vl
    bare = ImageTextModel(model.lm_path, weights="none", dtype=torch.bfloat16)
    assert bare.model is None and bare.base_from_engine and bare.routed_layers == model.routed_layers
    assert (bare.device, bare.dtype) == (torch.device("cpu"), torch.bfloat16)
    assert bare.weight_bytes == 0
    assert bare.to(torch.float32).dtype == torch.float32
    query = bare.encode_query(samples[0].image, samples[0].question)
    assert bare.engine_prompts(query.batch, None)[0].text == model.engine_prompts(query.batch, None)[0].text
    with pytest.raises(ValueError, match="send kernel with a fixed alpha and guard=false, or meanshift"):
        bare.routing_loss(bare.reference_batch(encoded.payload), encoded.routings, pinned=(True,) * 4)
    with pytest.raises(ValueError, match=r"loaded no weights \(weights: none\)"):
        bare.base_routing(query.batch)
