"""The `seq2seq` command: thin subcommands over the library."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from seq2seq.errors import (ConfigError, DecodingError, Interrupted, TrainingError, UserError, is_out_of_memory,
                     out_of_memory_message)
from seq2seq.decoding.evaluate_command import cmd_evaluate
from seq2seq.run.rundir import BEST
from seq2seq.training.distill_command import add_distill

log = logging.getLogger("seq2seq")


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
    from seq2seq.run.rundir import RunDir
    from seq2seq.training.begin import load_run_config
    from seq2seq.training.loop import train
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
    from seq2seq.training import distributed
    try:
        train(cfg, args.run_dir, resume=args.resume, quiet=args.quiet)
    finally:
        distributed.close()
    return 0


def cmd_prepare(args) -> int:
    from seq2seq.run.rundir import RunDir
    from seq2seq.training.begin import load_run_config, prepare
    run_dir = args.run_dir or str(RunDir.default_for(args.config))
    found = RunDir(run_dir).trained()
    if found:  # its tokenizers and config belong to that run
        raise TrainingError(f"{run_dir}: holds a run ({', '.join(p.name for p in found)}); prepare is for a new run: "
                            f"give another --run-dir (train --resume prepares what it needs itself)")
    store = prepare(load_run_config(args.config, args.set), run_dir, quiet=args.quiet)
    print(f"{store.directory}: {len(store):,} pairs")
    return 0


def cmd_translate(args) -> int:
    from seq2seq.decoding.translate_command import sampling_from_flags, translate_file
    from seq2seq.decoding.translator import Translator
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.nbest is not None and args.nbest < 1:
        raise DecodingError("--nbest: must be at least 1")
    sampling = sampling_from_flags(sample=args.sample, top_k=args.top_k, temperature=args.temperature,
                                   seed=args.seed, beam_size=args.beam_size, nbest=args.nbest)
    if args.attention:
        from seq2seq.run.plot import _pyplot
        _pyplot()  # a missing matplotlib is reported before any translation work
    translator = Translator.load(args.model[0] if len(args.model) == 1 else args.model, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize, precision=args.precision)
    options = dict(beam_size=args.beam_size, batch_size=args.batch_size, length_penalty=args.length_penalty,
                   max_len_ratio=args.max_len_ratio, sampling=sampling)
    translate_file(translator, input_path=args.input, output_path=args.output, options=options, nbest=args.nbest,
                   scores=args.scores, attention=args.attention, quiet=args.quiet)
    return 0


def cmd_serve(args) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("seq2seq serve needs the serve extra: pip install 'seq2seq-rnn[serve]'") from None
    from seq2seq.deploy.serve import Limits, check_models, serve
    check_models(args.model, args.checkpoint)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.beam_size is not None and not 1 <= args.beam_size <= args.max_beam:
        raise DecodingError(f"--beam-size: must be from 1 to --max-beam ({args.max_beam})")
    for name in ("max_batch", "max_sentences", "max_chars", "max_body_kb", "max_beam", "max_nbest", "max_queue"):
        if getattr(args, name) < 1:
            raise DecodingError(f"--{name.replace('_', '-')}: must be at least 1")
    for name in ("max_wait_ms", "max_queue_wait", "timeout", "shutdown_grace"):
        if not 0 <= getattr(args, name) < float("inf"):
            raise DecodingError(f"--{name.replace('_', '-')}: must be a number of at least 0")
    limits = Limits(max_body_bytes=args.max_body_kb * 1024, max_sentences=args.max_sentences,
                    max_chars=args.max_chars, max_beam=args.max_beam, max_nbest=args.max_nbest)
    load_options = dict(device=args.device, checkpoint=args.checkpoint, quantize=args.quantize,
                        precision=args.precision)
    serve(args.model, host=args.host, port=args.port, load_options=load_options, limits=limits,
          beam_size=args.beam_size, max_batch=args.max_batch, max_wait=args.max_wait_ms / 1000,
          max_queue=args.max_queue, max_queue_wait=args.max_queue_wait or None, timeout=args.timeout or None,
          access_log=args.access_log, shutdown_grace=args.shutdown_grace)
    return 0


def cmd_plot(args) -> int:
    from seq2seq.run.plot import plot_learning_curves
    for path in plot_learning_curves(args.run_dir, args.output):
        print(path)
    return 0


def cmd_info(args) -> int:
    from seq2seq.run.info import format_info, run_info
    info = run_info(args.run_dir, checkpoint=args.checkpoint)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def cmd_average(args) -> int:
    from seq2seq.run.average import average_run
    out, inputs = average_run(args.run_dir, last=args.last, output=args.output)
    print(f"averaged {', '.join(p.name for p in inputs)} into {out}")
    return 0


def cmd_export(args) -> int:
    from seq2seq.deploy.export import export_run, summary
    manifest = export_run(args.model, args.out, checkpoint=args.checkpoint, quantize=args.quantize)
    print(summary(manifest, args.out, quantize=args.quantize))
    return 0


def cmd_config(args) -> int:
    from seq2seq.config import defaults_yaml, dump_yaml
    from seq2seq.training.begin import load_run_config
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
    """The `seq2seq` command line: its subcommands in the order --help lists them."""
    from seq2seq import __version__
    parser = argparse.ArgumentParser(prog="seq2seq", description="Recurrent neural machine translation.")
    parser.add_argument("--version", action="version", version=f"seq2seq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_prepare, _add_translate, add_distill, _add_serve, _add_evaluate,
                _add_plot, _add_info, _add_average, _add_export, _add_config):
        add(sub)
    return parser


def _add_train(sub: argparse._SubParsersAction) -> None:
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


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="train the tokenizers and encode the training corpora into the run's "
                                       "prepared store (train does this itself when it is missing)")
    p.add_argument("--config", required=True, help="YAML experiment config")
    p.add_argument("--run-dir", help="the run directory train will use (default: runs/CONFIG_NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar or console log")
    p.set_defaults(func=cmd_prepare)


def _add_translate(sub: argparse._SubParsersAction) -> None:
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


def _add_serve(sub: argparse._SubParsersAction) -> None:
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
                        "and in progress before it, by the decoding speed; 0: no bound (default: 10)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="a request not answered within this gets 504 and its work is dropped; 0: no limit "
                        "(default: 30)")
    p.add_argument("--shutdown-grace", type=float, default=30.0, metavar="SECONDS", help="on SIGTERM, answer the "
                   "accepted requests for at most this long, then refuse the rest with 503 and exit (default: 30)")
    p.add_argument("--access-log", action="store_true", help="log every request on the console")
    p.set_defaults(func=cmd_serve)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score hypotheses against references with sacreBLEU")
    p.add_argument("--hyp", required=True, help="hypotheses, one per line")
    p.add_argument("--ref", required=True, help="references, one per line")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--lang", help="target language for the literature BLEU's Moses tokenizer (default: the "
                                  "reference file's ending, e.g. de for test.de)")
    p.set_defaults(func=cmd_evaluate)


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw learning curves (PNG) from RUN_DIR/metrics.jsonl (needs matplotlib)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--output", metavar="DIR", help="where the PNG files go (default: RUN_DIR/plots)")
    p.set_defaults(func=cmd_plot)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters, vocabularies, training time and best scores of a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", default=BEST, help="checkpoint file inside RUN_DIR (default: best.pt)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("average", help="average the weights of the last kept checkpoints into a new one")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--last", type=int, required=True, metavar="N",
                   help="average the N most recent best.stepN.pt files (see training.keep_best)")
    p.add_argument("--output", metavar="FILE", help="output checkpoint (default: RUN_DIR/averaged.pt)")
    p.set_defaults(func=cmd_average)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run as ONNX graphs, tokenizers and a manifest (needs the onnx "
                                      "extra): decoded by onnxruntime or in a browser")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="the run to export")
    p.add_argument("--checkpoint", default=BEST, help="checkpoint file inside RUN_DIR (default: best.pt)")
    p.add_argument("--out", required=True, metavar="DIR", help="the export folder (new, empty, or an earlier export)")
    p.add_argument("--quantize", choices=["int8"], help="int8 weights (onnxruntime's dynamic quantization)")
    p.set_defaults(func=cmd_export)


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print a resolved config, or all defaults with a comment per key")
    p.add_argument("--defaults", action="store_true", help="print the full default config with comments")
    p.add_argument("--config", help="YAML experiment config to resolve (default: the defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a value")
    p.set_defaults(func=cmd_config)


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
