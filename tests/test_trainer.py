"""Training runs: resume equals an uninterrupted run, seeds reproduce, best checkpoints are
pruned, and metrics.jsonl is machine-readable."""
import json
import os
import signal

import pytest
import torch

from conftest import tiny_config_dict, write_synthetic
from seq2seq.run.checkpoint import load_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.training.loop import StopFlag, TrainingError, train

STEPS = 25  # 15 batches per epoch: the runs cross an epoch boundary


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("small"), train=240, valid=20, test=5, seed=3)


def config(data_dir, **training):
    # Dropout makes the run depend on the RNG state, and the plateau schedule on the
    # validation history: resuming must restore both.
    raw = tiny_config_dict(
        data_dir,
        model={"encoder": {"emb_size": 16, "hidden_size": 16, "dropout": 0.2},
               "decoder": {"emb_size": 16, "hidden_size": 32, "dropout": 0.2}},
        training={"batch_size": 16, "max_epochs": 10, "max_steps": STEPS, "valid_every": 5,
                  "scheduler": "plateau", "plateau_patience": 0, "early_stop_metric": "loss",
                  "keep_best": 2, **training},
        decoding={"batch_size": 20})
    return config_from_dict(raw)


def weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("full")
    train(config(data_dir), run_dir, quiet=True)
    return run_dir


def test_resume_equals_an_uninterrupted_run(tmp_path, data_dir, full_run):
    run_dir = tmp_path / "resumed"
    # Stop on a validation step, so the stop itself adds no validation (and no scheduler step).
    first = train(config(data_dir, max_steps=10), run_dir, quiet=True)
    assert first["step"] == 10
    assert load_checkpoint(run_dir / "last.pt")["progress"]["epoch"] == 1
    result = train(config(data_dir, max_steps=STEPS), run_dir, resume=True, quiet=True)
    assert result["step"] == STEPS
    assert_same_weights(weights(run_dir), weights(full_run))
    resumed, full = (load_checkpoint(d / "last.pt") for d in (run_dir, full_run))
    assert resumed["progress"] == full["progress"] | {"elapsed": resumed["progress"]["elapsed"]}
    assert resumed["optimizer"]["param_groups"][0]["lr"] == full["optimizer"]["param_groups"][0]["lr"]


def test_resume_with_a_moving_average_equals_an_uninterrupted_run(tmp_path, data_dir):
    # last.pt holds the average ("model") and the trained weights ("raw_model"): both continue exactly.
    average = {"ema_decay": 0.8, "ema_start": 3}
    train(config(data_dir, **average), tmp_path / "full", quiet=True)
    train(config(data_dir, max_steps=10, **average), tmp_path / "resumed", quiet=True)
    train(config(data_dir, max_steps=STEPS, **average), tmp_path / "resumed", resume=True, quiet=True)
    full, resumed = (load_checkpoint(tmp_path / name / "last.pt") for name in ("full", "resumed"))
    assert_same_weights(resumed["model"], full["model"])
    assert_same_weights(resumed["raw_model"], full["raw_model"])
    assert any(not torch.equal(full["model"][k], full["raw_model"][k]) for k in full["model"])
    assert_same_weights(*(load_checkpoint(tmp_path / name / "best.pt")["model"] for name in ("full", "resumed")))


def test_decay_start_halves_the_rate_on_schedule_down_to_min_lr(tmp_path, data_dir, monkeypatch):
    import seq2seq.training.loop as trainer
    rates, real_update = [], trainer.update

    def recording_update(model, optimizer, *args, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return real_update(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(trainer, "update", recording_update)
    train(config(data_dir, scheduler="constant", lr=0.01, min_lr=0.002, decay_start=3, decay_every=2, max_steps=10),
          tmp_path / "run", quiet=True)
    # Updates 1-3 at the configured rate; halved after update 3 and 5; after 7 the floor.
    assert rates == [0.01] * 3 + [0.005] * 2 + [0.0025] * 2 + [0.002] * 3


def test_resume_with_decay_on_top_of_plateau_equals_an_uninterrupted_run(tmp_path, data_dir):
    decay = {"decay_start": 8, "decay_every": 4, "decay_factor": 0.7}
    train(config(data_dir, **decay), tmp_path / "full", quiet=True)
    train(config(data_dir, max_steps=10, **decay), tmp_path / "resumed", quiet=True)
    train(config(data_dir, max_steps=STEPS, **decay), tmp_path / "resumed", resume=True, quiet=True)
    full, resumed = (load_checkpoint(tmp_path / name / "last.pt") for name in ("full", "resumed"))
    assert_same_weights(resumed["model"], full["model"])
    rate = full["optimizer"]["param_groups"][0]["lr"]
    assert rate == resumed["optimizer"]["param_groups"][0]["lr"]
    # Five decays (after updates 8, 12, 16, 20, 24) on top of whatever the plateau schedule did,
    # which only ever lowers the rate.
    assert (tmp_path / "full" / "train.log").read_text().count("training.decay_start: learning rate") == 5
    assert rate <= 0.005 * 0.7 ** 5 * (1 + 1e-9)


def test_same_seed_gives_identical_weights(tmp_path, data_dir, full_run):
    train(config(data_dir), tmp_path / "again", quiet=True)
    assert_same_weights(weights(tmp_path / "again"), weights(full_run))


def test_different_seeds_give_different_weights(tmp_path, data_dir):
    train(config(data_dir, max_steps=3, seed=1), tmp_path / "a", quiet=True)
    train(config(data_dir, max_steps=3, seed=2), tmp_path / "b", quiet=True)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_metrics_jsonl_has_one_valid_json_line_per_validation(full_run):
    recs = records(full_run)
    assert recs
    for r in recs:
        for key in ("step", "epoch", "lr", "valid_loss", "valid_ppl", "bleu", "chrf"):
            assert key in r, key
        assert isinstance(r["valid_loss"], float) and 0.0 <= r["bleu"] <= 100.0
    steps = [r["step"] for r in recs]
    assert steps == sorted(set(steps)), f"validated twice at one step: {steps}"
    assert steps[-1] == STEPS


def test_epoch_end_on_a_validation_step_validates_once(tmp_path, data_dir):
    # valid_every=1 makes every epoch end fall on a validation step.
    run_dir = tmp_path / "every"
    train(config(data_dir, valid_every=1, max_steps=16), run_dir, quiet=True)
    recs = records(run_dir)
    assert [r["step"] for r in recs] == list(range(1, 17))
    assert {r["epoch"] for r in recs} == {1, 2}  # an epoch boundary was crossed


def test_epoch_end_validations_name_the_epoch_just_finished(tmp_path, data_dir):
    run_dir = tmp_path / "epochs"
    train(config(data_dir, valid_every=1000, valid_at_epoch_end=True, max_steps=None, max_epochs=2),
          run_dir, quiet=True)
    recs = records(run_dir)
    assert [r["epoch"] for r in recs] == [1, 2]
    first, second = (r["step"] for r in recs)
    assert second == 2 * first  # both at an epoch's end


def test_keep_best_keeps_at_most_n_best_checkpoints(full_run):
    kept = sorted(full_run.glob("best.step*.pt"))
    assert 1 <= len(kept) <= 2
    best_records = sorted((r for r in records(full_run) if r.get("best")), key=lambda r: r["valid_loss"])
    assert {p.name for p in kept} == {f"best.step{r['step']}.pt" for r in best_records[:2]}
    best = load_checkpoint(full_run / "best.pt")
    assert best["step"] == best_records[0]["step"]
    for p in kept:
        load_checkpoint(p)


def test_run_directory_contents(full_run):
    for name in ("config.yaml", "spm.joint.model", "best.pt", "last.pt", "train.log", "metrics.jsonl",
                 "valid.best.hyp"):
        assert (full_run / name).exists(), name
    assert "training finished" in (full_run / "train.log").read_text()


def test_resume_without_last_checkpoint_is_an_error(tmp_path, data_dir):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config(data_dir), tmp_path / "empty", resume=True, quiet=True)


def test_stop_flag_turns_a_signal_into_a_flag():
    previous = signal.getsignal(signal.SIGTERM)
    with StopFlag() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_drop_unseen_gives_each_side_its_own_pieces_and_still_learns(tmp_path, synthetic_dir):
    from conftest import expected_translation
    from seq2seq.data.tokenizer import Tokenizer
    from seq2seq.decoding.translator import Translator
    run_dir = tmp_path / "run"
    train(config_from_dict(tiny_config_dict(synthetic_dir, tokenizer={"drop_unseen": True})), run_dir, quiet=True)
    src_list = [int(x) for x in (run_dir / "vocab.source.txt").read_text().split()]
    tgt_list = [int(x) for x in (run_dir / "vocab.target.txt").read_text().split()]
    joint = Tokenizer(run_dir / "spm.joint.model")
    # Lower-case source words and upper-case target words share no piece but the single
    # characters every side keeps.
    shared = [joint.id_to_piece(i) for i in set(src_list) & set(tgt_list) - {0, 1, 2, 3}]
    assert shared and all(len(p) == 1 for p in shared), shared
    assert len(src_list) < len(joint) and len(tgt_list) < len(joint)
    weights = load_checkpoint(run_dir / "best.pt")["model"]
    assert weights["encoder.embed.weight"].shape[0] == len(src_list)
    assert weights["decoder.embed.weight"].shape[0] == len(tgt_list)
    assert weights["decoder.output.weight"].shape[0] == len(tgt_list)

    translator = Translator.load(run_dir, device="cpu")
    sources = (synthetic_dir / "test.src").read_text().splitlines()
    hyps = translator.translate(sources, beam_size=3)
    exact = sum(h == expected_translation(s) for h, s in zip(hyps, sources)) / len(sources)
    assert exact >= 0.8, f"only {exact:.0%} of test sentences translated exactly"

    # A run moved without its piece lists is named, not a shape mismatch.
    (run_dir / "vocab.target.txt").unlink()
    from seq2seq.run.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="missing its tokenizer vocab.target.txt"):
        Translator.load(run_dir, device="cpu")


def test_drop_unseen_with_shared_embeddings_keeps_one_list_for_both_sides(tmp_path, synthetic_dir):
    from seq2seq.data import read_parallel
    from seq2seq.data.tokenizer import Tokenizer
    from seq2seq.run.rundir import RunDir
    from seq2seq.training.tokenizers import prepare_tokenizers
    raw = tiny_config_dict(synthetic_dir, tokenizer={"drop_unseen": True},
                           model={"share_embeddings": True, "encoder": {"emb_size": 32}, "decoder": {"emb_size": 32}})
    src, tgt = read_parallel(synthetic_dir / "train.src", synthetic_dir / "train.tgt")
    src_tok, tgt_tok = prepare_tokenizers(config_from_dict(raw), RunDir(tmp_path), sample=(src, tgt))
    assert src_tok.kept == tgt_tok.kept
    # Both languages' pieces are on both sides: neither is spelled out.
    full = Tokenizer(tmp_path / "spm.joint.model")
    for line in (src[0], tgt[0]):
        assert src_tok.pieces(src_tok.encode(line)) == full.pieces(full.encode(line))


def test_the_training_log_reads_the_device_once_per_settling():
    from types import SimpleNamespace

    from seq2seq.profiling import count_ops
    from seq2seq.training.state import Progress
    from seq2seq.training.log import TrainLog
    from seq2seq.training.update import UpdateResult
    session = SimpleNamespace(progress=Progress())
    logger = TrainLog(SimpleNamespace(tensorboard=False), session.progress, None)
    logger.start_epoch()
    no, yes = torch.tensor(False), torch.tensor(True)
    results = [UpdateResult(torch.tensor(6.0), 10, 0, no, no), UpdateResult(torch.tensor(float("nan")), 7, 0, yes, no),
               UpdateResult(torch.tensor(3.0), 5, 0, yes, yes), UpdateResult(torch.tensor(4.0), 10, 0, no, no)]
    with count_ops() as adding:
        for r in results:
            logger.add(r)
            session.progress.step += 1
    assert adding.syncs == 0, adding.sites
    with count_ops() as settling:
        logger.settle()
    assert settling.syncs == 1, settling.sites
    assert logger.window_loss() == 10.0 / 20  # the skipped updates' losses are left out
    assert logger.skipped == 2 and logger.tokens == 32
    assert session.progress.nonfinite_in_a_row == 0  # the overflow does not count, the applied update resets


def test_prefetched_batches_change_nothing(tmp_path, data_dir, full_run, monkeypatch):
    # The same run with the batches built in the loop's own thread: losses and weights are the same.
    import contextlib

    from seq2seq.training import loop as trainer_module
    monkeypatch.setattr(trainer_module, "prefetch", lambda items, pin: contextlib.nullcontext(items))
    train(config(data_dir), tmp_path / "inline", quiet=True)
    assert_same_weights(weights(tmp_path / "inline"), weights(full_run))
    losses = [json.loads(line)["loss"] for line in (full_run / "train.jsonl").read_text().splitlines()]
    inline = [json.loads(line)["loss"] for line in (tmp_path / "inline" / "train.jsonl").read_text().splitlines()]
    assert inline == losses and len(losses) > 0


@pytest.mark.parametrize("shift, wins", [(-10.0, True), (10.0, False)], ids=["average-wins", "average-loses"])
def test_the_best_checkpoints_are_averaged_validated_and_kept_if_at_least_as_good(tmp_path, data_dir, monkeypatch,
                                                                                  shift, wins):
    # The average's validation loss is shifted so that each outcome is certain.
    from seq2seq.training import checkpoints as checkpoints_module
    averaged_files = []
    real_average, real_validate = checkpoints_module.average_checkpoints, checkpoints_module.validate

    def average(paths):
        averaged_files.append([p.name for p in paths])
        return real_average(paths)

    def validate(*args, **kwargs):
        result = real_validate(*args, **kwargs)
        result["valid_loss"] += shift if averaged_files else 0.0
        return result

    monkeypatch.setattr(checkpoints_module, "average_checkpoints", average)
    monkeypatch.setattr(checkpoints_module, "validate", validate)
    run_dir = tmp_path / "run"
    train(config(data_dir, max_steps=15, average_checkpoints=2), run_dir, quiet=True)
    kept = sorted(run_dir.glob("best.step*.pt"), key=lambda p: int(p.name[9:-3]))
    assert averaged_files == [[p.name for p in kept]] and len(kept) == 2  # keep_best: 2

    averaged = load_checkpoint(run_dir / "averaged.pt")
    assert averaged["averaged_from"] == [p.name for p in kept] and "optimizer" not in averaged
    a, b = (load_checkpoint(p)["model"] for p in kept)
    for name, value in averaged["model"].items():
        assert torch.equal(value, ((a[name].double() + b[name].double()) / 2).float()), name
    record = records(run_dir)[-1]
    assert record["checkpoint"] == "averaged.pt" and record["averaged_from"] == averaged["averaged_from"]
    assert record.get("best", False) == wins
    best = load_checkpoint(run_dir / "best.pt")
    best_kept = min((r for r in records(run_dir) if r.get("best") and "averaged_from" not in r),
                    key=lambda r: r["valid_loss"])
    assert_same_weights(best["model"], averaged["model"] if wins else load_checkpoint(
        run_dir / f"best.step{best_kept['step']}.pt")["model"])
    log = (run_dir / "train.log").read_text()
    assert ("the average won and is now best.pt" in log) == wins
    assert ("best.pt (step" in log and "stays" in log) == (not wins)
    # The kept files (links to earlier best.pt files) still hold their own weights: best.pt was replaced.
    assert any(not torch.equal(a[k], averaged["model"][k]) for k in a)
