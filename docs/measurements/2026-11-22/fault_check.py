"""Run the fault injections of tests/test_reliability.py (on the synthetic task, in temporary
directories) and print a markdown table: fault, expected behaviour, observed, pass/fail.

    PYTHONPATH=$PWD python docs/measurements/2026-11-22/fault_check.py [-k EXPR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]  # docs/measurements/2026-11-22/ -> the checkout

# test function -> (fault injected, behaviour promised)
FAULTS = {
    "test_signal_saves_last_and_resume_matches_uninterrupted_run":
        ("{} mid-epoch (a real signal to `seq2seq train`)",
         "exit 130, resume command printed, last.pt loads; `--resume` ends with weights bitwise equal to an uninterrupted run"),
    "test_crash_while_writing_checkpoint_keeps_previous_one":
        ("crash half-way through writing a checkpoint", "previous checkpoint intact and loadable, no temp file left"),
    "test_sigkill_loses_only_the_updates_since_the_last_periodic_save":
        ("SIGKILL mid-epoch with training.save_every_steps=4, before any validation",
         "last.pt from the newest periodic save (step 8 or later) loads; `--resume` ends with weights bitwise equal to an uninterrupted run"),
    "test_save_every_minutes_writes_last_pt_between_validations":
        ("training.save_every_minutes shorter than an update", "last.pt written after every update that no validation or the end of training saves anyway"),
    "test_a_real_full_device_gives_the_disk_full_error":
        ("checkpoint written to a real full device (/dev/full)", "the disk-full error, not a torch RuntimeError; previous checkpoint intact, no temp file left"),
    "test_full_disk_during_training_is_one_line_and_keeps_the_previous_last_pt":
        ("disk full on the second last.pt of a `seq2seq train` run", "exit 2, one line naming the file, the full disk and what to change; the earlier last.pt loads"),
    "test_unwritable_run_dir_is_found_before_training":
        ("run directory cannot be created (parent is a file)", "exit 2 before training, message names the directory"),
    "test_read_only_run_dir_is_found_before_training":
        ("read-only run directory (skipped as root)", "exit 2 before training"),
    "test_nonfinite_loss_skips_the_update_with_a_warning":
        ("NaN loss on two batches", "those updates skipped with a warning each; training goes on"),
    "test_nonfinite_losses_in_a_row_stop_naming_step_and_checkpoint":
        ("NaN loss from step 6 on", "TrainingError after 5 in a row naming the step and last.pt (step 5, finite weights)"),
    "test_nonfinite_weights_are_never_saved_as_best":
        ("NaN weights at a validation with a 'better' score", "best.pt stays the earlier finite model"),
    "test_out_of_memory_batches_are_split_with_the_same_result":
        ("CUDA out-of-memory for batches of more than 5 pairs", "batches split in halves; same weights as without the fault"),
    "test_out_of_memory_on_single_long_pairs_skips_and_counts_them":
        ("'out of memory' RuntimeError for any pair over 8 pieces", "those pairs skipped, exact count logged and saved"),
    "test_different_line_counts_name_both_files_and_counts":
        ("parallel files with 3 and 2 lines", "exit 2, one line naming both files and counts"),
    "test_invalid_utf8_is_an_error_naming_file_and_line_or_skipped_on_request":
        ("invalid UTF-8 byte in line 41", "exit 2 naming file:line; with data.skip_invalid_utf8 the pair is skipped and counted"),
    "test_empty_and_overlong_pairs_are_dropped_with_counts":
        ("empty, whitespace-only and over-long pairs", "dropped, counts logged"),
    "test_training_set_that_ends_up_empty_is_an_error":
        ("training files {} (no pair left)", "exit 2, one-line error"),
    "test_all_pairs_over_the_limit_is_an_error":
        ("every pair over the length limit", "exit 2, one-line error with counts"),
    "test_missing_files_and_directories_are_one_line_errors":
        ("training file: {}", "exit 2, one line naming the path"),
    "test_unreadable_files_are_one_line_errors":
        ("unreadable training file (permission error injected)", "exit 2, one line naming the path"),
    "test_translate_input_problems_are_one_line_errors":
        ("translate: missing input, directory as input, unwritable output", "exit 2, one line naming the path"),
    "test_odd_lines_come_back_one_for_one_in_order":
        ("empty, blank, control chars, mixed scripts, emoji, lone \\r, U+2028, over-long lines",
         "one output line per input line, in order; truncation warned with the right line number"),
    "test_cli_translates_raw_bytes_line_for_line":
        ("the same plus invalid UTF-8 bytes, through the CLI", "one output line per input line; warning on stderr"),
    "test_translate_stream_memory_does_not_grow_with_input":
        ("500 vs 2,000 streamed lines", "peak Python memory does not grow with input length"),
    "test_stdin_output_appears_before_input_ends":
        ("translate in a pipe, stdin left open", "translations arrive before stdin is closed"),
    "test_bad_checkpoints_give_one_clear_message":
        ("checkpoint: {}", "translate: exit 2, one clear message naming the problem"),
    "test_resume_from_a_damaged_last_checkpoint_is_a_clear_error":
        ("--resume from a truncated last.pt", "exit 2, one line naming the file"),
    "test_loading_never_runs_code_from_the_file":
        ("checkpoint with a pickled os.system call", "refused (weights_only); the code never runs"),
}


class Collector:
    def __init__(self):
        self.results: dict[str, list[tuple[str, str, str]]] = {}

    def pytest_runtest_logreport(self, report):
        if report.when != "call" and not (report.skipped or report.failed):
            return
        name = report.nodeid.split("::")[-1]
        func, _, param = name.partition("[")
        if report.passed:
            observed, verdict = "as expected", "pass"
        elif report.skipped:
            observed, verdict = str(report.longrepr[-1]).removeprefix("Skipped: "), "skipped"
        else:
            message = report.longreprtext.strip().splitlines()
            observed = next((line[2:].strip() for line in message if line.startswith("E ")), message[-1])
            verdict = "FAIL"
        label = param.split("-")[0].rstrip("]") if param else ""
        self.results.setdefault(func, []).append((label, observed, verdict))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default=None, help="pytest -k expression to run only some faults")
    args = parser.parse_args()
    collector = Collector()
    pytest_args = [str(ROOT / "tests" / "test_reliability.py"), "-q", "-p", "no:cacheprovider",
                   "--rootdir", str(ROOT)] + (["-k", args.k] if args.k else [])
    pytest.main(pytest_args, plugins=[collector])
    print("\n| fault | expected behaviour | observed | result |")
    print("|---|---|---|---|")
    failed = False
    for func, (fault, expected) in FAULTS.items():
        for label, observed, verdict in collector.results.get(func, []):
            failed |= verdict == "FAIL"
            what = fault.format(label.replace("_", " ")) if "{}" in fault else fault
            print(f"| {what} | {expected} | {observed.replace('|', '/')} | {verdict} |")
    unknown = set(collector.results) - set(FAULTS)
    for func in sorted(unknown):  # a new test without a table entry still shows up
        for label, observed, verdict in collector.results[func]:
            failed |= verdict == "FAIL"
            print(f"| {func} {label} | (see the test) | {observed} | {verdict} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
