"""The moving average of the weights (training.ema_decay): its decay schedule, an update queued
on the device without reading anything back, and a trained run whose saved weights are the
average computed by hand from the sequence of trained weights."""
import json

import pytest
import torch

from conftest import tiny_config_dict, write_synthetic
from seq2seq.training import loop as loop_module
from seq2seq.run.checkpoint import load_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.training.ema import WeightAverage, ema_decay
from seq2seq.profiling import count_ops
from seq2seq.run.rundir import open_run
from seq2seq.training.validation import read_validation, validation_set
from seq2seq.training.update import update
from seq2seq.training.validation import validation_loss
from test_update import adam, small_batches


def test_the_decay_copies_until_start_then_is_capped_early_on():
    assert ema_decay(3, decay=0.999, start=3) is None  # still a copy
    assert ema_decay(4, decay=0.999, start=3) == pytest.approx(2 / 11)
    assert ema_decay(103, decay=0.999, start=3) == pytest.approx(101 / 110)
    assert ema_decay(10**6, decay=0.999, start=0) == 0.999  # the cap has risen above the decay


def tied_model():
    """test_update.small_model's LSTM as the recipe builds it: one embedding matrix for both languages
    (share_embeddings) that is also the decoder's output layer (tie_embeddings)."""
    from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
    from seq2seq.model.model import build_model
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell="lstm", emb_size=32, hidden_size=16, dropout=0.1),
                      decoder=DecoderConfig(cell="lstm", emb_size=32, hidden_size=32, num_layers=2, dropout=0.1),
                      share_embeddings=True, tie_embeddings=True)
    return build_model(cfg, src_vocab_size=60, tgt_vocab_size=60).train()


def the_tied_weights(model) -> list[torch.Tensor]:
    return [model.encoder.embed.weight, model.decoder.embed.weight, model.decoder.output.weight]


def test_the_tied_weights_stay_one_tensor_in_the_average_and_an_update_reads_nothing_back():
    model = tied_model()
    assert all(w is model.encoder.embed.weight for w in the_tied_weights(model))
    optimizer = adam(model)
    average = WeightAverage(model, decay=0.99, start=1)
    batches = small_batches(3)
    update(model, optimizer, batches[:1], clip_norm=1.0, label_smoothing=0.1)
    average.update(1)
    with count_ops() as counts:
        for step, batch in enumerate(batches[1:], start=2):
            update(model, optimizer, [batch], clip_norm=1.0, label_smoothing=0.1)
            average.update(step)
    assert counts.syncs == 0, counts.sites
    # The average's model ties the same weights into one tensor of its own (a copy that untied
    # them would average three matrices that drift apart, and save three): one averaged entry per
    # trained parameter, two fewer than the model's weights in the state dict.
    tied = the_tied_weights(average.model)
    assert all(w is tied[0] for w in tied) and tied[0] is not model.encoder.embed.weight
    assert len(average.averaged) == len(list(model.parameters())) == len(model.state_dict()) - 2
    assert sum(w is tied[0] for w in average.averaged) == 1
    # The tied tensor is averaged: after the copy at update 1 it moved towards the trained one.
    assert not torch.equal(tied[0], model.encoder.embed.weight)
    assert all(not p.requires_grad for p in average.model.parameters())  # the average does not train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("ema"), train=160, valid=20, test=5, seed=4)


DECAY, START, STEPS = 0.9, 4, 14


def ema_config(data_dir):
    return config_from_dict(tiny_config_dict(
        data_dir, model={"encoder": {"emb_size": 16, "hidden_size": 16, "dropout": 0.1},
                         "decoder": {"emb_size": 16, "hidden_size": 32, "dropout": 0.1}},
        training={"batch_size": 16, "max_steps": STEPS, "valid_every": 5, "early_stop_metric": "loss",
                  "ema_decay": DECAY, "ema_start": START, "keep_best": 3},
        decoding={"batch_size": 20}))


def test_saved_weights_are_the_moving_average_of_the_trained_weights(tmp_path, data_dir, monkeypatch):
    trained = []  # the trained weights after every update, the initial ones first
    real_update = loop_module.update

    def recording(model, *args, **kwargs):
        if not trained:
            trained.append({k: v.detach().double().clone() for k, v in model.state_dict().items()})
        result = real_update(model, *args, **kwargs)
        trained.append({k: v.detach().double().clone() for k, v in model.state_dict().items()})
        return result

    monkeypatch.setattr(loop_module, "update", recording)
    run_dir = tmp_path / "run"
    loop_module.train(ema_config(data_dir), run_dir, quiet=True)
    assert len(trained) == STEPS + 1

    by_hand = [dict(trained[0])]  # the average after each update, by the formula of the docs
    for n in range(1, STEPS + 1):
        if n <= START:
            by_hand.append(dict(trained[n]))
        else:
            d = min(DECAY, (1 + n - START) / (10 + n - START))
            by_hand.append({k: d * by_hand[-1][k] + (1 - d) * trained[n][k] for k in trained[n]})

    last = load_checkpoint(run_dir / "last.pt")
    for name, value in last["model"].items():
        torch.testing.assert_close(value.double(), by_hand[STEPS][name], rtol=1e-5, atol=1e-6, msg=name)
        assert torch.equal(last["raw_model"][name].double(), trained[STEPS][name]), name
    assert any(not torch.equal(last["model"][k], last["raw_model"][k]) for k in last["model"])

    # Validation chose best.pt among the averages: it holds the average of its step.
    best = load_checkpoint(run_dir / "best.pt")
    assert "raw_model" not in best
    for name, value in best["model"].items():
        torch.testing.assert_close(value.double(), by_hand[best["step"]][name], rtol=1e-5, atol=1e-6, msg=name)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == STEPS
    best_record = min(records, key=lambda r: r["valid_loss"])
    assert best_record["step"] == best["step"]
    # ... and the validation loss recorded for it is the average's own.
    run = open_run(run_dir)
    cfg = run.config
    valid = validation_set(cfg.data, *read_validation(cfg.data), run.src_tok, run.tgt_tok)
    loss = validation_loss(run.model, valid.pairs, torch.device("cpu"))
    assert loss == pytest.approx(best_record["valid_loss"], rel=1e-6)
