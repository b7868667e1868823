"""Where does a CUDA training update / beam step synchronise? (torch.cuda.set_sync_debug_mode)"""
import sys, traceback, warnings, collections
sys.path.insert(0, ".")  # run from the repository root: python docs/measurements/2026-12-04-gpu/where_syncs.py
sys.path.insert(0, "tests")
import torch
from torch.profiler import ProfilerActivity, profile
from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
from seq2seq.data import ParallelData, make_batch
from seq2seq.model import build_model
from seq2seq.update import update
from seq2seq.search import beam_search, greedy_search, max_output_lengths

for cell in ("lstm", "gru"):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(cell=cell, emb_size=16, hidden_size=16, dropout=0.1),
                      decoder=DecoderConfig(cell=cell, emb_size=16, hidden_size=32, dropout=0.1))
    model = build_model(cfg, src_vocab_size=40, tgt_vocab_size=50).cuda().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    g = torch.Generator().manual_seed(1)
    src = [torch.randint(4, 40, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    tgt = [torch.randint(4, 50, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (8,), generator=g)]
    batch = make_batch(ParallelData(src, tgt), list(range(8))).pin_memory().to(torch.device("cuda"))
    print(cell, "src_lengths device", batch.src_lengths.device, "ntok type", type(batch.num_tgt_tokens))
    for _ in range(2):
        update(model, opt, [batch], clip_norm=1.0, label_smoothing=0.1)
    torch.cuda.synchronize()
    sites = collections.Counter()
    def hook(message, category, filename, lineno, file=None, line=None):
        st = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename]
        ours = [f"{f.filename.split('/')[-1]}:{f.lineno}:{f.name}" for f in st][-4:]
        sites[(str(message)[:60], " <- ".join(ours))] += 1
    warnings.showwarning = hook
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    for _ in range(3):
        update(model, opt, [batch], clip_norm=1.0, label_smoothing=0.1)
    torch.cuda.set_sync_debug_mode(0)
    print(cell, "update syncs over 3 updates:", sum(sites.values()))
    for k, v in sites.items(): print("  ", v, k)
    sites.clear()
    dec = model.eval().for_decoding()
    L = batch.src_lengths
    torch.cuda.set_sync_debug_mode("warn")
    with torch.no_grad():
        beam_search(dec, batch.src, L, beam_size=4, max_lengths=max_output_lengths(L, 1.5, 3))
    torch.cuda.set_sync_debug_mode(0)
    print(cell, "beam syncs:", sum(sites.values()))
    for k, v in sites.most_common(8): print("  ", v, k)
    sites.clear()
    torch.cuda.set_sync_debug_mode("warn")
    with torch.no_grad():
        greedy_search(dec, batch.src, L, max_lengths=max_output_lengths(L, 1.5, 3))
    torch.cuda.set_sync_debug_mode(0)
    print(cell, "greedy syncs:", sum(sites.values()))
    for k, v in sites.most_common(8): print("  ", v, k)
    # empty profiler windows: does the profiler itself synchronise?
    for n in (0, 3, 6):
        model.train()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(n):
                update(model, opt, [batch], clip_norm=1.0, label_smoothing=0.1)
        names = [e.name for e in prof.events()]
        print(cell, f"profiler window of {n} updates:", {k: names.count(k) for k in ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaMemcpyAsync", "aten::_local_scalar_dense")})
