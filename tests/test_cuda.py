"""On a CUDA GPU (scripts/gpu_check.sh runs these with `pytest -m cuda`; they skip elsewhere):
placement, training in each precision, GPU checkpoints on a CPU, GPU search equal to CPU search,
the fused cell kernels, the encoder under bf16, host syncs, and DDP over NCCL (in one process,
and in two where two GPUs exist)."""
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import expected_translation, tiny_config_dict
from seq2seq.run.checkpoint import load_checkpoint
from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig, config_from_dict
from seq2seq.data import ParallelData, make_batch
from seq2seq.model.model import build_model
from seq2seq.model.precision import autocast
from seq2seq.profiling import cuda_waits
from seq2seq.model.recurrence import gru_cell, gru_pointwise, lstm_cell, lstm_pointwise
from seq2seq.training.loop import train
from seq2seq.decoding.translator import Translator
from seq2seq.training.update import token_loss

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, synthetic_dir):
    run = tmp_path_factory.mktemp("gpu_run")
    train(config_from_dict(tiny_config_dict(synthetic_dir, training={"device": "cuda"})), run, quiet=True)
    return run


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_the_gpu_in_each_precision(tmp_path, synthetic_dir, precision):
    run = tmp_path / precision
    raw = tiny_config_dict(synthetic_dir, training={"device": "cuda", "precision": precision, "max_steps": 30})
    result = train(config_from_dict(raw), run, quiet=True)
    assert result["step"] == 30
    last = load_checkpoint(run / "last.pt")  # loads on the CPU
    assert all(w.device.type == "cpu" and torch.isfinite(w).all() for w in last["model"].values())
    assert (last["scaler"] is not None) == (precision == "fp16")


def test_a_gpu_run_learns_and_decodes_on_the_cpu_as_on_the_gpu(gpu_run, synthetic_dir):
    sources = (synthetic_dir / "test.src").read_text().splitlines()
    gpu = Translator.load(gpu_run, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    cpu = Translator.load(gpu_run, device="cpu")
    for beam in (1, 5):
        on_gpu, on_cpu = gpu.translate(sources, beam_size=beam), cpu.translate(sources, beam_size=beam)
        assert sum(a == b for a, b in zip(on_gpu, on_cpu)) >= 0.95 * len(sources), beam
    exact = sum(h == expected_translation(s) for h, s in zip(on_gpu, sources)) / len(sources)
    assert exact >= 0.8


def test_ddp_over_nccl_in_one_process(tmp_path, synthetic_dir):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(synthetic_dir, training={"device": "cuda", "max_steps": 20})))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "seq2seq",
           "train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 20


@pytest.mark.parametrize("with_hidden", [True, False])
def test_fused_lstm_cell_equals_the_plain_maths(with_hidden):
    torch.manual_seed(0)
    gi, gh = (torch.randn(5, 12, dtype=torch.float64, device="cuda", requires_grad=True) for _ in range(2))
    c = torch.randn(5, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    hidden = gh if with_hidden else None
    torch.autograd.gradcheck(lambda a, b, c: lstm_cell(a, b if with_hidden else None, c), (gi, gh, c))
    plain = lstm_pointwise(gi if hidden is None else gi + hidden, c)
    torch.testing.assert_close(lstm_cell(gi, hidden, c), plain)


def test_fused_gru_cell_equals_the_plain_maths():
    torch.manual_seed(0)
    gi, gh = (torch.randn(5, 12, dtype=torch.float64, device="cuda", requires_grad=True) for _ in range(2))
    h = torch.randn(5, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    torch.autograd.gradcheck(gru_cell, (gi, gh, h))
    torch.testing.assert_close(gru_cell(gi, gh, h), gru_pointwise(gi, gh, h))


def cuda_gradients(model, batch, precision):
    model.zero_grad()
    with autocast(precision, torch.device("cuda")):
        enc = model.encoder(batch.src, batch.src_lengths)
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        loss = token_loss(logits, batch.tgt_out, 0.1)
    loss.backward()
    return enc.states.dtype, loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_encoder_rnn_is_not_fp16_under_bf16_and_gradients_match_float32(cell):
    # torch's autocast would run the cuDNN RNN in fp16 whatever type it was asked for.
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell=cell, emb_size=16, hidden_size=16, dropout=0.0),
                      decoder=DecoderConfig(cell=cell, emb_size=16, hidden_size=32, dropout=0.0))
    model = build_model(cfg, src_vocab_size=40, tgt_vocab_size=50).cuda()
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(4, 40, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    tgt = [torch.randint(4, 50, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    batch = make_batch(ParallelData(src, tgt), list(range(8))).to(torch.device("cuda"))
    _, loss32, grads32 = cuda_gradients(model, batch, "fp32")
    states_dtype, loss16, grads16 = cuda_gradients(model, batch, "bf16")
    assert states_dtype == torch.float32
    # The bounds of tests/test_precision.py's CPU test.
    assert abs(loss16 - loss32) < 0.02 * loss32
    largest = max(g.norm() for g in grads32.values())
    for name, g32 in grads32.items():
        g16 = grads16[name]
        assert g16.dtype == torch.float32, name
        assert (g16 - g32).norm() < 0.02 * largest, name
        if g32.norm() < 1e-3 * largest:
            continue
        assert torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0) > 0.98, name
        assert abs(g16.norm() / g32.norm() - 1) < 0.1, name


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_training_update_and_a_search_step_do_not_wait_for_the_gpu(cell):
    from seq2seq.decoding.search import Sampling, beam_search, greedy_search, max_output_lengths, sample_search
    from seq2seq.training.update import update
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell=cell, emb_size=16, hidden_size=16, dropout=0.1),
                      decoder=DecoderConfig(cell=cell, emb_size=16, hidden_size=32, dropout=0.1))
    model = build_model(cfg, src_vocab_size=40, tgt_vocab_size=50).cuda().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(4, 40, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    tgt = [torch.randint(4, 50, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    batch = make_batch(ParallelData(src, tgt), list(range(8))).pin_memory().to(torch.device("cuda"))
    update(model, optimizer, [batch], clip_norm=1.0, label_smoothing=0.1)
    torch.cuda.synchronize()

    def updates():
        for _ in range(3):
            update(model, optimizer, [batch], clip_norm=1.0, label_smoothing=0.1)
    assert cuda_waits(updates) == 0
    decoding = model.eval().for_decoding()
    lengths = batch.src_lengths
    # The limits and line numbers live on the device, as translate_ids makes them: the search
    # itself copies nothing to the device.
    limits = max_output_lengths(lengths.cuda(), 1.5, 3)
    lines = torch.arange(len(lengths), device="cuda")
    steps = int(limits.max())
    with torch.no_grad():
        # One small copy to the host per step and one for the results: the bound the CPU count
        # holds the same search to (tests/test_search.py).
        assert 0 < cuda_waits(lambda: beam_search(decoding, batch.src, lengths, beam_size=4,
                                                  max_lengths=limits)) <= steps + 1
        assert 0 < cuda_waits(lambda: greedy_search(decoding, batch.src, lengths, max_lengths=limits)) <= steps + 1
        assert 0 < cuda_waits(lambda: sample_search(decoding, batch.src, lengths, max_lengths=limits, line_ids=lines,
                                                    sampling=Sampling(top_k=5))) <= steps + 1


def test_ddp_over_nccl_in_two_processes(tmp_path, synthetic_dir):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(synthetic_dir, training={
        "device": "cuda", "max_steps": 20, "valid_every": 10, "scheduler": "plateau", "batch_size": 16})))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "seq2seq",
           "train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["step"] == 20 and last["progress"]["last_valid_step"] == 20


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_layer_norm_and_the_moving_average_run_on_the_gpu_without_waiting(cell):
    # A layer-normalized encoder runs its recurrence written out on the GPU too; the decoder's
    # normalized gates feed the fused cell kernels. Both give the CPU's results, and an update
    # with the moving average's update reads nothing back.
    from seq2seq.training.ema import WeightAverage
    from seq2seq.training.update import update
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell=cell, emb_size=16, hidden_size=16, num_layers=2, dropout=0.1,
                                            layer_norm=True, word_dropout=0.1),
                      decoder=DecoderConfig(cell=cell, emb_size=16, hidden_size=32, num_layers=2, dropout=0.1,
                                            layer_norm=True, word_dropout=0.1))
    model = build_model(cfg, src_vocab_size=40, tgt_vocab_size=50)
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(4, 40, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    tgt = [torch.randint(4, 50, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    batch = make_batch(ParallelData(src, tgt), list(range(8)))
    with torch.no_grad():
        on_cpu = model.eval()(batch.src, batch.src_lengths, batch.tgt_in)
        gpu_batch = batch.pin_memory().to(torch.device("cuda"))
        on_gpu = model.cuda()(gpu_batch.src, gpu_batch.src_lengths, gpu_batch.tgt_in)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-4)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    average = WeightAverage(model, decay=0.99, start=0)
    update(model, optimizer, [gpu_batch], clip_norm=1.0, label_smoothing=0.1)
    average.update(1)
    torch.cuda.synchronize()

    def updates():
        for step in range(2, 5):
            update(model, optimizer, [gpu_batch], clip_norm=1.0, label_smoothing=0.1)
            average.update(step)
    assert cuda_waits(updates) == 0
    assert all(torch.isfinite(p).all() for p in average.model.parameters())
