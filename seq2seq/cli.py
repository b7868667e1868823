"""The `seq2seq` command: thin subcommands over the library."""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
from pathlib import Path

from .data import groups, read_lines
from .errors import (ConfigError, DataError, DecodingError, Interrupted, TrainingError, UserError, is_out_of_memory,
                     out_of_memory_message)
from .rundir import BEST

log = logging.getLogger("seq2seq")


def _open_input(path: str | None):
    # Split on \n only and keep undecodable bytes visible, so line n out is always line n in.
    if path is None or path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: " + ("is a directory, expected a text file" if p.is_dir() else "file not found"))
    try:
        return open(p, encoding="utf-8", errors="replace", newline="\n")
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror})") from None


def _lines(stream):
    for line in stream:
        yield line[:-1] if line.endswith("\n") else line


def _config_argument(args) -> str | None:
    """The config given as `train CONFIG` or `train --config CONFIG` (not two different ones)."""
    if args.config_file is not None and args.config is not None and args.config_file != args.config:
        raise ConfigError(f"two configs given: {args.config_file} and --config {args.config}; give one")
    return args.config if args.config is not None else args.config_file


def _start_over(run, *, overwrite: bool, quiet: bool) -> None:
    """Refuse a run directory that holds a run, unless --overwrite says to clear it."""
    found = run.trained()
    if not found:
        return
    if not overwrite:
        names = ", ".join(p.name for p in found)
        raise TrainingError(f"{run}: holds a run ({names}); continue it with --resume, start over with --overwrite "
                            f"(removes its checkpoints, logs, config and tokenizers), or give another --run-dir")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one process clears the directory
        removed = run.clear()
        if not quiet:
            print(f"seq2seq train: --overwrite: removed from {run}: {', '.join(p.name for p in removed)}",
                  file=sys.stderr)


def cmd_train(args) -> int:
    from .rundir import RunDir
    from .start import load_run_config
    from .trainer import train
    config = _config_argument(args)
    if config is None and not args.resume:
        raise ConfigError("--config: a config file is needed (seq2seq train CONFIG, or --resume with --run-dir)")
    if args.resume and args.overwrite:
        raise TrainingError("--resume continues a run and --overwrite starts it over; give one of them")
    if args.run_dir is None:
        if config is None:
            raise ConfigError("--run-dir: needed with --resume when no --config is given")
        args.run_dir = str(RunDir.default_for(config))
    # Resuming without --config keeps the run's own settings (its stopping limits included).
    base = config if config is not None else RunDir(args.run_dir).config_file
    cfg = load_run_config(base, args.set)
    if not args.resume:
        _start_over(RunDir(args.run_dir), overwrite=args.overwrite, quiet=args.quiet)
    from . import distributed
    try:
        train(cfg, args.run_dir, resume=args.resume, quiet=args.quiet)
    finally:
        distributed.close()
    return 0


def cmd_prepare(args) -> int:
    from .rundir import RunDir
    from .start import load_run_config, prepare
    run_dir = args.run_dir or str(RunDir.default_for(args.config))
    found = RunDir(run_dir).trained()
    if found:  # its tokenizers and config belong to that run
        raise TrainingError(f"{run_dir}: holds a run ({', '.join(p.name for p in found)}); prepare is for a new run: "
                            f"give another --run-dir (train --resume prepares what it needs itself)")
    store = prepare(load_run_config(args.config, args.set), run_dir, quiet=args.quiet)
    print(f"{store.directory}: {len(store):,} pairs")
    return 0


def _count_lines(path: str | None) -> int | None:
    if path is None or path == "-":
        return None
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def cmd_translate(args) -> int:
    from tqdm import tqdm
    from .translator import Translator
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.nbest is not None and args.nbest < 1:
        raise DecodingError("--nbest: must be at least 1")
    sampling = _sampling(args)
    if args.attention:
        from .plot import _pyplot
        _pyplot()  # a missing matplotlib is reported before any translation work
    translator = Translator.load(args.model[0] if len(args.model) == 1 else args.model, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize, precision=args.precision)
    options = dict(beam_size=args.beam_size, batch_size=args.batch_size, length_penalty=args.length_penalty,
                   max_len_ratio=args.max_len_ratio, sampling=sampling)
    nbest = args.nbest or 1
    detailed = args.nbest is not None or args.scores or args.attention is not None
    source = _open_input(args.input)
    interactive = args.input in (None, "-") and sys.stdin.isatty()
    show_bar = not args.quiet and not interactive and sys.stderr.isatty()
    try:
        out = (open(args.output, "w", encoding="utf-8", newline="\n") if args.output
               else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="\n", line_buffering=True))
    except OSError as e:
        raise DataError(f"{args.output}: cannot write ({e.strerror})") from None
    bar = tqdm(total=_count_lines(args.input) if show_bar else None, disable=not show_bar, unit="sent",
               desc="translating", dynamic_ncols=True, leave=False)
    try:
        with source:
            if not detailed:
                chunk = 1 if interactive else None
                for text in translator.translate_stream(_lines(source), chunk_lines=chunk, **options):
                    out.write(text + "\n")
                    bar.update(1)
            else:
                size = 1 if interactive else (args.batch_size or translator.config.decoding.batch_size) * 4
                index = 0
                for chunk in groups(_lines(source), size):
                    results = translator.translate_detailed(chunk, nbest=nbest, return_attention=bool(args.attention),
                                                            first_line=index + 1, **options)
                    for hyps in results:
                        _write_detailed(out, index, hyps, args)
                        index += 1
                        bar.update(1)
            out.flush()
    finally:
        bar.close()
        if args.output:
            out.close()
        else:
            out.detach()
    return 0


def _sampling(args):
    """translate's --sample options as a search.Sampling, or None; a combination that would be
    ignored or is out of range is a DecodingError."""
    from .config import SEED_MAX
    from .search import Sampling
    given = [flag for flag, value in (("--top-k", args.top_k), ("--temperature", args.temperature),
                                      ("--seed", args.seed)) if value is not None]
    if not args.sample:
        if given:
            raise DecodingError(f"{given[0]}: only used with --sample")
        return None
    if (args.beam_size is not None and args.beam_size > 1) or args.nbest is not None:
        raise DecodingError("--sample draws one translation per input; leave out --beam-size (or give 1) and --nbest")
    if args.top_k is not None and args.top_k < 1:
        raise DecodingError(f"--top-k: must be at least 1, got {args.top_k}")
    if args.temperature is not None and not 0 < args.temperature < float("inf"):
        raise DecodingError(f"--temperature: must be a number above 0, got {args.temperature}")
    if args.seed is not None and not 0 <= args.seed <= SEED_MAX:
        raise DecodingError(f"--seed: must be from 0 to {SEED_MAX}, got {args.seed}")
    defaults = Sampling()
    return Sampling(seed=defaults.seed if args.seed is None else args.seed, top_k=args.top_k,
                    temperature=defaults.temperature if args.temperature is None else args.temperature)


def _write_detailed(out, index: int, hyps, args) -> None:
    """One input's output: TSV for --nbest/--scores, plain text otherwise; heatmap for --attention."""
    if args.nbest is not None:
        for rank, h in enumerate(hyps, 1):
            out.write(f"{index}\t{rank}\t{h.score:.4f}\t{h.text.replace(chr(9), ' ')}\n")
    elif args.scores:
        out.write(f"{hyps[0].text.replace(chr(9), ' ')}\t{hyps[0].score:.4f}\n")
    else:
        out.write(hyps[0].text + "\n")
    best = hyps[0]
    if args.attention and best.attention is not None:
        from .plot import plot_attention
        plot_attention(best.attention, best.src_pieces, best.tgt_pieces + ["</s>"],
                       Path(args.attention) / f"{index:05d}.png")


def cmd_serve(args) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("seq2seq serve needs the serve extra: pip install 'seq2seq-rnn[serve]'") from None
    from .onnx_model import is_export, verify
    from .rundir import RunDir
    from .serve import Limits, serve
    for run_dir in args.model:  # a wrong path is an error now, not a service that never gets ready
        if is_export(run_dir):
            verify(run_dir)
        else:
            RunDir(run_dir).checkpoint(args.checkpoint)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.beam_size is not None and not 1 <= args.beam_size <= args.max_beam:
        raise DecodingError(f"--beam-size: must be from 1 to --max-beam ({args.max_beam})")
    for name in ("max_batch", "max_sentences", "max_chars", "max_body_kb", "max_beam", "max_nbest", "max_queue"):
        if getattr(args, name) < 1:
            raise DecodingError(f"--{name.replace('_', '-')}: must be at least 1")
    for name in ("max_wait_ms", "max_queue_wait", "timeout"):
        if not 0 <= getattr(args, name) < float("inf"):
            raise DecodingError(f"--{name.replace('_', '-')}: must be a number of at least 0")
    limits = Limits(max_body_bytes=args.max_body_kb * 1024, max_sentences=args.max_sentences,
                    max_chars=args.max_chars, max_beam=args.max_beam, max_nbest=args.max_nbest)
    load_options = dict(device=args.device, checkpoint=args.checkpoint, quantize=args.quantize,
                        precision=args.precision)
    serve(args.model, host=args.host, port=args.port, load_options=load_options, limits=limits,
          beam_size=args.beam_size, max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000,
          max_queue=args.max_queue, max_queue_wait=args.max_queue_wait or None, timeout=args.timeout or None,
          access_log=args.access_log)
    return 0


def cmd_evaluate(args) -> int:
    from .metrics import LITERATURE_LABEL, MOSES_EXTRA, literature_bleu, score_all
    hyps, _ = read_lines(args.hyp)
    refs, _ = read_lines(args.ref)
    if len(hyps) != len(refs):
        raise DataError(f"{args.hyp} has {len(hyps)} lines but {args.ref} has {len(refs)}")
    scores = score_all(hyps, refs)
    # The reference's language from its name (data files are PREFIX.LANG) unless --lang says it.
    suffix = Path(args.ref).suffix[1:]
    lang = args.lang or (suffix if re.fullmatch(r"[a-z]{2}", suffix) else None)
    literature, note = None, None
    if lang is None:
        note = "not computed: give the target language with --lang (the reference file has no .LANG ending)"
    else:
        try:
            literature = literature_bleu(hyps, refs, lang)
        except ImportError:
            note = f"not computed: it needs sacremoses ({MOSES_EXTRA})"
    if args.json:
        print(json.dumps({**{k: v for k, v in scores.items() if not k.endswith("_text")},
                          "bleu_literature": literature, "bleu_literature_label": LITERATURE_LABEL,
                          "bleu_literature_lang": lang, **({"bleu_literature_note": note} if note else {})}, indent=2))
    else:
        print(f"BLEU            {scores['bleu']:.2f}  {scores['bleu_signature']}")
        print(f"BLEU lowercased {scores['bleu_lowercase']:.2f}  {scores['bleu_lowercase_signature']}")
        print(f"chrF            {scores['chrf']:.2f}  {scores['chrf_signature']}")
        print(scores["bleu_text"])
        figure = note or f"{literature:.2f} (Moses tokenizer: {lang})"
        print(f"{LITERATURE_LABEL}: {figure}")
    return 0


def cmd_plot(args) -> int:
    from .plot import plot_learning_curves
    for path in plot_learning_curves(args.run_dir, args.output):
        print(path)
    return 0


def cmd_info(args) -> int:
    from .info import format_info, run_info
    info = run_info(args.run_dir, checkpoint=args.checkpoint)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_average(args) -> int:
    from .average import average_run
    out, inputs = average_run(args.run_dir, last=args.last, output=args.output)
    print(f"averaged {', '.join(p.name for p in inputs)} into {out}")
    return 0


def cmd_export(args) -> int:
    from .export import export_run
    manifest = export_run(args.model, args.out, checkpoint=args.checkpoint, quantize=args.quantize)
    check = manifest["check"]
    page = " and the in-browser page (serve the folder statically)" if "index.html" in manifest["files"] else ""
    print(f"exported {manifest['exported_from']['run']}/{manifest['exported_from']['checkpoint']} to {args.out}"
          f"{' (int8)' if args.quantize else ''}: ONNX graphs{page}; float32 graphs agree with PyTorch within "
          f"{check['max_abs_difference']:.1g} (allowed {check['tolerance']:g})")
    return 0


def cmd_config(args) -> int:
    from .config import defaults_yaml, dump_yaml
    from .start import load_run_config
    if args.defaults:
        sys.stdout.write(defaults_yaml())
    else:
        sys.stdout.write(dump_yaml(load_run_config(args.config, args.set)))
    return 0


def add_decoding_options(p: argparse.ArgumentParser) -> None:
    """The options `translate` and `serve` share: which runs to load, where, and how to decode."""
    p.add_argument("--model", required=True, action="append", metavar="RUN_DIR",
                   help="a run directory written by train; give it several times to decode with an ensemble of "
                        "runs (their probabilities averaged at every step; they must share their tokenizers)")
    p.add_argument("--checkpoint", default=BEST,
                   help="checkpoint file inside each RUN_DIR (default: best.pt, or last.pt in a run that has "
                        "no best.pt yet)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to decode; auto: CUDA when torch sees a GPU, else the CPU (default: auto)")
    p.add_argument("--beam-size", type=int, help="beam width; 1 is greedy (default: the run's decoding.beam_size)")
    p.add_argument("--quantize", choices=["int8"],
                   help="decode with int8 dynamic quantization of the matrix products (CPU only; the "
                        "checkpoint stays float32)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="float type of the matrix products (weights stay float32); auto: bf16 on a GPU that "
                        "has it (else fp16) or a CPU with AMX, float32 elsewhere (default: the run's "
                        "decoding.precision)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="seq2seq", description="Recurrent neural machine translation.")
    parser.add_argument("--version", action="version", version=f"seq2seq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config_file", nargs="?", metavar="CONFIG", help="YAML experiment config (or --config)")
    p.add_argument("--config", help="YAML experiment config")
    p.add_argument("--run-dir", help="where checkpoints, tokenizers and logs go (default: runs/CONFIG_NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set training.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt exactly where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in a RUN_DIR that holds a run: removes its checkpoints, logs, metrics, config "
                        "and tokenizers (the prepared store stays, and is rebuilt if its inputs changed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or console log (train.log is still written)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prepare", help="train the tokenizers and encode the training corpora into the run's "
                                       "prepared store (train does this itself when it is missing)")
    p.add_argument("--config", required=True, help="YAML experiment config")
    p.add_argument("--run-dir", help="the run directory train will use (default: runs/CONFIG_NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar or console log")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("translate", help="translate raw text, one sentence per line")
    add_decoding_options(p)
    p.add_argument("--input", help="input file (default: standard input)")
    p.add_argument("--output", help="output file (default: standard output)")
    p.add_argument("--batch-size", type=int, help="sentences per batch (default: decoding.batch_size)")
    p.add_argument("--length-penalty", type=float, help="GNMT length-penalty alpha")
    p.add_argument("--max-len-ratio", type=float, help="output at most this times the source length (+ offset)")
    p.add_argument("--nbest", type=int, metavar="K",
                   help="write the K best translations per input as TSV: input index (from 0), rank, score, text")
    p.add_argument("--scores", action="store_true", help="append each translation's score as a TSV column")
    p.add_argument("--attention", metavar="DIR",
                   help="write an attention heatmap of the best translation of each input into DIR/INDEX.png "
                        "(needs matplotlib)")
    p.add_argument("--sample", action="store_true",
                   help="draw each translation from the model's distribution instead of searching for the best "
                        "(sampled back-translation); line N's draw depends on --seed, N and the model only, not on "
                        "batching")
    p.add_argument("--top-k", type=int, metavar="K", help="with --sample: draw among the K most likely pieces only")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="with --sample: divide the log-probabilities by T (above 1 flatter, below 1 sharper; "
                        "default 1, the model's own distribution)")
    p.add_argument("--seed", type=int, metavar="S", help="with --sample: the seed of the draws (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("serve", help="an HTTP translation service with dynamic batching and a web page "
                                     "(needs the serve extra)")
    add_decoding_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    p.add_argument("--max-batch", type=int, default=64, help="most sentences decoded in one batch (default: 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests to join it (default: 5 ms)")
    p.add_argument("--max-sentences", type=int, default=64, help="most sentences in one request (default: 64)")
    p.add_argument("--max-chars", type=int, default=2000, help="most characters in one sentence (default: 2000)")
    p.add_argument("--max-body-kb", type=int, default=1024, help="largest request body in KiB (default: 1024)")
    p.add_argument("--max-beam", type=int, default=16, help="largest beam a request may ask for (default: 16)")
    p.add_argument("--max-nbest", type=int, default=8, help="largest n-best list a request may ask for (default: 8)")
    p.add_argument("--max-queue", type=int, default=256, metavar="SENTENCES",
                   help="most sentences waiting to be decoded; a request beyond them gets 503 with Retry-After "
                        "at once (default: 256)")
    p.add_argument("--max-queue-wait", type=float, default=10.0, metavar="SECONDS",
                   help="refuse (503, Retry-After) a request that would wait longer than this for the work queued "
                        "before it, by the measured decoding speed; 0: no bound (default: 10)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a request not answered within this gets 504 and its work is dropped; 0: no limit "
                        "(default: 30)")
    p.add_argument("--access-log", action="store_true", help="log every request on the console")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("evaluate", help="score hypotheses against references with sacreBLEU")
    p.add_argument("--hyp", required=True, help="hypotheses, one per line")
    p.add_argument("--ref", required=True, help="references, one per line")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--lang", help="target language for the literature BLEU's Moses tokenizer (default: the "
                                  "reference file's ending, e.g. de for test.de)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("plot", help="draw learning curves (PNG) from RUN_DIR/metrics.jsonl (needs matplotlib)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--output", metavar="DIR", help="where the PNG files go (default: RUN_DIR/plots)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("info", help="parameters, vocabularies, training time and best scores of a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", default=BEST, help="checkpoint file inside RUN_DIR (default: best.pt)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("average", help="average the weights of the last kept checkpoints into a new one")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--last", type=int, required=True, metavar="N",
                   help="average the N most recent best.stepN.pt files (see training.keep_best)")
    p.add_argument("--output", metavar="FILE", help="output checkpoint (default: RUN_DIR/averaged.pt)")
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("export", help="write a run as ONNX graphs, tokenizers and a manifest (needs the onnx "
                                      "extra): decoded by onnxruntime or in a browser")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="the run to export")
    p.add_argument("--checkpoint", default=BEST, help="checkpoint file inside RUN_DIR (default: best.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="the export folder (new, empty, or an earlier export)")
    p.add_argument("--quantize", choices=["int8"], help="int8 weights (onnxruntime's dynamic quantization)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("config", help="print a resolved config, or all defaults with a comment per key")
    p.add_argument("--defaults", action="store_true", help="print the full default config with comments")
    p.add_argument("--config", help="YAML experiment config to resolve (default: the defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a value")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # What a user can fix is one line and exit status 2, chosen by the exception's type (errors.py);
    # anything else is a bug and keeps its traceback.
    try:
        for name in ("beam_size", "batch_size"):
            value = getattr(args, name, None)
            if value is not None and value < 1:
                raise DecodingError(f"--{name.replace('_', '-')} must be at least 1")
        return args.func(args)
    except UserError as e:
        print(f"seq2seq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"seq2seq {args.command}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        print(f"seq2seq {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        message = out_of_memory_message(e, decoding=args.command in ("translate", "serve"))
        print(f"seq2seq {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
