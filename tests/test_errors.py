"""errors.py: the one test for running out of memory, and the line the CLI prints for it."""
import pytest
import torch

from seq2seq.errors import ConfigError, TrainingError, UserError, is_out_of_memory, out_of_memory_message


@pytest.mark.parametrize("error", [
    MemoryError(),
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 85899345920 bytes. Error code 12"),
    RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"),
])
def test_out_of_memory_is_recognised(error):
    assert is_out_of_memory(error)


@pytest.mark.parametrize("error", [
    RuntimeError("CUDA error: device-side assert triggered"),
    ValueError("out of memory"),  # only an allocator's error counts
    OSError(28, "No space left on device"),
    KeyError("memory"),
])
def test_other_errors_are_not_out_of_memory(error):
    assert not is_out_of_memory(error)


def test_the_out_of_memory_line_says_what_to_make_smaller():
    error = RuntimeError("DefaultCPUAllocator: can't allocate memory\nmore detail")
    training = out_of_memory_message(error, decoding=False)
    assert training.startswith("out of memory (DefaultCPUAllocator: can't allocate memory); ")
    assert "\n" not in training
    assert all(key in training for key in ("training.batch_tokens", "hidden_size", "tokenizer.vocab_size"))
    decoding = out_of_memory_message(MemoryError(), decoding=True)
    assert decoding.startswith("out of memory (MemoryError); ") and "--batch-size" in decoding


def test_user_errors_are_still_the_builtin_errors_they_were():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(TrainingError, UserError) and issubclass(TrainingError, RuntimeError)
