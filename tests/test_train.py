"""`r2t2 train` end to end on a small subset: both stages run, the checkpoint saves and loads back."""
import torch

from r2t2.model import load_model
from r2t2.routing import is_valid_routing
from r2t2.train import TrainConfig, train


def test_small_training_run_saves_a_loadable_model(tmp_path) -> None:
    report = train(tmp_path / "ckpt", TrainConfig(expert_steps=4, expert_batch=16, mix_epochs=1, mix_batch=64),
                   limit=240, log=lambda _: None)
    assert report["samples"] == 240 and report["seconds"] > 0
    model = load_model(tmp_path / "ckpt")
    assert not any(p.requires_grad for p in model.parameters())
    assert len(model.fingerprint) == 16
    from r2t2.data import load_split

    samples = load_split("test", limit=4)
    batch = model.labelled_batch([s.image for s in samples], [s.question for s in samples],
                                 [s.answer for s in samples])
    routing = model.route(batch)
    assert all(is_valid_routing(r) for r in routing)
    assert torch.isfinite(model.routing_loss(batch, routing)).all()
    assert len(model.generate(batch, routing)) == 4
