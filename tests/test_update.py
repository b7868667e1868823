"""The training loss: the hand-written label-smoothed cross-entropy must give torch's values
and gradients, with padding ignored. The update: it never waits for the device (the profiler
counts its host syncs), and a non-finite one changes nothing."""
import pytest
import torch
import torch.nn.functional as F

from seq2seq.training import update as update_module
from seq2seq.profiling import count_ops
from seq2seq.data.tokenizer import PAD
from seq2seq.training.update import token_loss, update


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_token_loss_matches_torch_cross_entropy(eps):
    torch.manual_seed(0)
    logits = (3 * torch.randn(4, 7, 50, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 50, (4, 7))
    target[target == PAD] = PAD + 1
    target[0, 5:] = PAD
    target[2, 3:] = PAD
    reference = logits.detach().clone().requires_grad_()

    ours = token_loss(logits, target, eps)
    theirs = F.cross_entropy(reference.reshape(-1, 50), target.reshape(-1), ignore_index=PAD,
                             reduction="sum", label_smoothing=eps)
    torch.testing.assert_close(ours, theirs)
    upstream = torch.tensor(0.37, dtype=torch.float64)  # a scaled loss, as when dividing by tokens
    (ours * upstream).backward()
    (theirs * upstream).backward()
    torch.testing.assert_close(logits.grad, reference.grad)
    assert logits.grad[0, 5:].abs().sum() == 0 and logits.grad[2, 3:].abs().sum() == 0
    assert logits.grad[1].abs().sum() > 0


def test_token_loss_in_float32_stays_close_and_keeps_dtype():
    torch.manual_seed(1)
    logits = (5 * torch.randn(64, 8000)).requires_grad_()
    target = torch.randint(1, 8000, (64,))
    ours = token_loss(logits, target, 0.1)
    ours.backward()
    grad = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, target, ignore_index=PAD, reduction="sum", label_smoothing=0.1).backward()
    assert grad.dtype == torch.float32
    # torch's and our float32 softmax round differently, and by CPU (about 2e-5 relative on AVX2).
    torch.testing.assert_close(grad, logits.grad, rtol=1e-4, atol=1e-6)


# -- a training update never waits for the device ---------------------------------------------

def small_model(cell: str, input_feeding: bool = True):
    from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
    from seq2seq.model.model import build_model
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell=cell, emb_size=16, hidden_size=16, dropout=0.1),
                      decoder=DecoderConfig(cell=cell, emb_size=16, hidden_size=32, num_layers=2, dropout=0.1,
                                            input_feeding=input_feeding))
    return build_model(cfg, src_vocab_size=50, tgt_vocab_size=60).train()


def small_batches(count: int, seed: int = 0):
    import random
    from seq2seq.data import ParallelData, make_batch
    rng = random.Random(seed)
    pairs = [([rng.randrange(4, 50) for _ in range(rng.randint(1, 9))],
              [rng.randrange(4, 60) for _ in range(rng.randint(1, 9))]) for _ in range(8 * count)]
    data = ParallelData([s for s, _ in pairs], [t for _, t in pairs])
    return [make_batch(data, range(8 * i, 8 * i + 8)) for i in range(count)]


def adam(model):
    # As state.build_optimizer makes it: fused, so the skip is decided on the device.
    return torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_training_update_reads_nothing_back_from_the_device(cell, monkeypatch):
    model = small_model(cell)
    optimizer = adam(model)
    batches = small_batches(4)
    options = dict(clip_norm=1.0, label_smoothing=0.1, accum_steps=2)
    update(model, optimizer, batches[:2], **options)  # the optimizer's state is made on the first step
    nan_loss = {"on": False}
    real = update_module.token_loss
    monkeypatch.setattr(update_module, "token_loss",
                        lambda *a: real(*a) * float("nan") if nan_loss["on"] else real(*a))
    with count_ops() as counts:
        result = update(model, optimizer, batches[2:], **options)
        nan_loss["on"] = True
        skipped = update(model, optimizer, batches[:2], **options)  # a NaN loss: skipped on the device
    assert counts.syncs == 0, counts.sites
    assert not result.skipped and skipped.skipped and not skipped.overflow
    assert torch.isfinite(result.loss_sum) and result.tokens == sum(b.num_tgt_tokens for b in batches[2:])


def test_a_skipped_update_changes_neither_weights_nor_optimizer_state(monkeypatch):
    model = small_model("lstm")
    optimizer = adam(model)
    batches = small_batches(2)
    update(model, optimizer, batches[:1], clip_norm=1.0, label_smoothing=0.0)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer.state_dict()["state"].items()}
    real = update_module.token_loss
    monkeypatch.setattr(update_module, "token_loss", lambda *a: real(*a) * float("inf"))
    result = update(model, optimizer, batches[1:], clip_norm=1.0, label_smoothing=0.0)
    assert result.skipped
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    for k, v in optimizer.state_dict()["state"].items():
        assert all(torch.equal(state[k][n], t) for n, t in v.items()), k  # step counts included
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_weight_decay_shrinks_the_weights_as_each_optimizer_defines_it(optimizer, weight_decay):
    # No loss gradient at all: whatever moves the weights is training.weight_decay.
    from seq2seq.config import config_from_dict
    from seq2seq.training.state import build_optimizer
    cfg = config_from_dict({"training": {"optimizer": optimizer, "lr": 0.1, "weight_decay": weight_decay}})
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    start = model.weight.detach().clone()
    opt = build_optimizer(model, cfg.training)
    model.weight.grad = torch.zeros_like(model.weight)
    opt.step()
    if optimizer == "adamw":  # decoupled: the weights shrink by lr * weight_decay of themselves
        expected = start * (1 - 0.1 * weight_decay)
    elif optimizer == "sgd":  # an L2 term in the gradient, plain step
        expected = start - 0.1 * weight_decay * start
    else:  # Adam: the L2 term joins the gradient, and Adam's first step is lr * its sign
        expected = start - 0.1 * torch.sign(start) * (weight_decay > 0)
    torch.testing.assert_close(model.weight.detach(), expected, rtol=1e-6, atol=1e-6)
