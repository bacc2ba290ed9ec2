"""LM routing rows in the torch model: read at the answer position, applied there, the same on every path."""

import asyncio

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from r2t2.data import load_split
from r2t2.engine_prompt import LmRows
from r2t2.model import load_model
from r2t2.model.lm_routing import LmRouting, routing_at
from r2t2.routing import is_valid_routing


@pytest.fixture(scope="module", params=["embedded", "quartet"])
def model(request):
    return load_model(request.param)


@pytest.fixture(scope="module")
def batch(model):
    samples = load_split("reference", limit=6, seed=5)
    return model.labelled_batch([s.image for s in samples], [s.question for s in samples], [s.answer for s in samples])


def _prompts(model, batch, routing):
    """Right-padded prompts [B, S, h], their mask and the position of each prompt's last token."""
    prompts = model.prompt_embeds(batch, routing)
    lengths = torch.as_tensor([len(p) for p in prompts])
    mask = pad_sequence([torch.ones(len(p), dtype=torch.long) for p in prompts], batch_first=True)
    return pad_sequence(prompts, batch_first=True), mask, lengths - 1


def test_lm_rows_are_the_routers_distribution_at_the_last_prompt_token(model, batch) -> None:
    """The prefix-cached path reads the same distribution as a plain transformers forward of the whole prompt."""
    vision = model.route(batch)
    full = model.full_routing(batch, vision)
    assert all(is_valid_routing(r) for r in full)
    embeds, mask, last = _prompts(model, batch, full)
    answer = torch.zeros(mask.shape, dtype=torch.bool)
    answer[torch.arange(len(last)), last] = True
    layers = model.config.lm_routing_indices
    with torch.no_grad(), routing_at(LmRouting(layers, answer, capture=True)) as seen:
        model.lm(inputs_embeds=embeds, attention_mask=mask)
    for row, layer in zip(range(len(model.config.router.rows), model.routing_shape[0]), layers):
        assert torch.allclose(full[:, row, :model.config.lm_experts], seen.captured[layer], atol=1e-5)


def _moved(model, batch, seed: int, sharpness: float = 3.0):
    """The router's routing of `batch` with its LM rows replaced by random distributions; their row indices."""
    generator = torch.Generator().manual_seed(seed)
    full = model.full_routing(batch, model.route(batch))
    lm_rows = list(range(len(model.config.router.rows), model.routing_shape[0]))
    moved = full.clone()
    moved[:, lm_rows, :model.config.lm_experts] = torch.softmax(
        sharpness * torch.randn(len(batch), len(lm_rows), model.config.lm_experts, generator=generator), -1)
    return full, moved, lm_rows


@pytest.mark.parametrize("positions", ["answer", "first"])
def test_pinned_lm_rows_change_the_loss_exactly_as_the_transformers_forward_does(model, batch, positions) -> None:
    """routing_loss (lean or prefix-cached) under pinned LM rows equals the full forward under the same rows,
    applied at every answer position or (first) at each sample's first alone, [ANS]."""
    _, moved, lm_rows = _moved(model, batch, seed=1)
    pinned = tuple(i in lm_rows or i < len(model.config.router.rows) for i in range(model.routing_shape[0]))
    fast = model.routing_loss(batch, moved, pinned=pinned, lm_positions=positions)
    # The same loss from transformers' own forward of prompt + answer, the rows applied from [ANS] on (or at it).
    embed = model.lm.get_input_embeddings()
    pad = model.tokenizer.pad_token_id
    sequences, labels, starts = [], [], []
    for b, prompt in enumerate(model.prompt_embeds(batch, moved)):
        answer = batch.answer_ids[b][batch.answer_ids[b] != pad]
        sequences.append(torch.cat([prompt, embed(answer[:-1])]))
        target = torch.full((len(sequences[-1]),), -100)
        target[len(prompt) - 1:] = answer
        labels.append(target)
        starts.append(len(prompt) - 1)
    inputs = pad_sequence(sequences, batch_first=True)
    mask = pad_sequence([torch.ones(len(s), dtype=torch.long) for s in sequences], batch_first=True)
    indices = torch.arange(inputs.shape[1])[None, :]
    starts = torch.as_tensor(starts)[:, None]
    answer_tokens = (indices >= starts if positions == "answer" else indices == starts) & (mask == 1)
    rows = moved[:, lm_rows, :model.config.lm_experts]
    with torch.no_grad(), routing_at(LmRouting(model.config.lm_routing_indices, answer_tokens, rows=rows)):
        logits = model.lm(inputs_embeds=inputs, attention_mask=mask).logits
    target = pad_sequence(labels, batch_first=True, padding_value=-100)
    token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none", ignore_index=-100)
    slow = token_loss.sum(1) / (target != -100).sum(1)
    assert torch.allclose(fast, slow, atol=1e-4), (fast - slow).abs().max()
    assert not torch.allclose(fast, model.routing_loss(batch, moved), atol=1e-3)  # the rows did change something


async def _generated(backend, prompt, rows):
    from serving.backends import SamplingOptions

    return [delta async for delta in backend.generate(prompt, SamplingOptions(max_tokens=4), rows)]


@pytest.mark.parametrize("positions", ["answer", "first"])
def test_the_torch_backend_answers_as_the_model_does_under_lm_rows(model, positions) -> None:
    """Generation with a key/value cache (the torch backend marks each call's tokens from the prompt's last index)
    answers as the model's own loop, which runs the whole sequences at every step; with `first` each layer routed
    one token with its row."""
    from serving.backends.torch_backend import TorchBackend

    samples = load_split("test", limit=8, seed=5)  # questions whose answers these rows change, at either positions
    batch = model.labelled_batch([s.image for s in samples], [s.question for s in samples], [s.answer for s in samples])
    full, moved, lm_rows = _moved(model, batch, seed=0, sharpness=2.0)
    expected = model.answer(batch, moved, pinned=(True,) * model.routing_shape[0], lm_positions=positions)
    assert expected != model.answer(batch, full)  # the rows change answers, so agreeing below means something
    backend = TorchBackend(str(model.lm_path), model.max_positions)
    for b, prompt in enumerate(model.prompt_embeds(batch, full)):
        rows = LmRows({model.routing_layout.rows[r].layer: moved[b, r, :model.config.lm_experts].tolist()
                       for r in lm_rows}, positions)
        [delta] = asyncio.run(_generated(backend, prompt, rows))
        assert delta.text.strip() == expected[b]
        if positions == "first":
            assert {ran["tokens"] for ran in delta.lm_report.values()} == {1}


def test_lm_rows_get_a_gradient_only_when_pinned(model, batch) -> None:
    full = model.full_routing(batch, model.route(batch))[[0]]
    lm_rows = list(range(len(model.config.router.rows), model.routing_shape[0]))
    free = full.clone().requires_grad_(True)
    model.routing_loss(batch[[0]], free).sum().backward()
    assert free.grad[:, lm_rows].abs().sum() == 0
    pinned = full.clone().requires_grad_(True)
    model.routing_loss(batch[[0]], pinned, pinned=(True,) * model.routing_shape[0]).sum().backward()
    assert pinned.grad[:, lm_rows].abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_unpinned_lm_rows_leave_answers_and_losses_as_without_them(model, batch) -> None:
    vision = model.route(batch)
    full = model.full_routing(batch, vision)
    assert torch.equal(model.routing_loss(batch, full), model.routing_loss(batch, vision))
    assert model.answer(batch, full) == model.answer(batch, vision)
