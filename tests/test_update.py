"""The training loss: the hand-written label-smoothed cross-entropy must give torch's values
and gradients, with padding ignored."""
import pytest
import torch
import torch.nn.functional as F

from seq2seq.tokenizer import PAD
from seq2seq.update import token_loss


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
