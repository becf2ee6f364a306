"""The tiny student's device: validation, CPU results unchanged, GPU results close to the CPU's."""

import dataclasses

import pytest
import torch

from dataeng_gym.envs.student import (
    StudentConfig,
    TinyStudent,
    _batches,
    _packed,
    resolve_device,
)
from dataeng_gym.errors import ConfigError, StudentError

MICRO = StudentConfig(
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    intermediate_size=32,
    batch_size=16,
    max_train_steps=20,
    base_steps=40,
    base_batch_size=32,
)
EXAMPLES = [(f"rev {i * 7919 % 1000}", str(i * 7919 % 1000)[::-1]) for i in range(300)]
CUDA = torch.cuda.is_available()


def _trained(config, cache_dir):
    student = TinyStudent(config, seed=1, cache_dir=cache_dir)
    student.load_base("k", lambda: EXAMPLES)
    result = student.fine_tune(EXAMPLES[:100], seed=3)
    return student, result, student.answer([p for p, _ in EXAMPLES[:60]], result.state)


def test_device_is_validated_and_resolved(monkeypatch):
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        StudentConfig(device="gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    # a machine without CUDA (this one, or one made so by hiding torch's GPUs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(StudentError, match="sees no CUDA GPU.*device='auto'"):
        resolve_device("cuda")
    with pytest.raises(StudentError, match="no CUDA GPU"):
        TinyStudent(dataclasses.replace(MICRO, device="cuda"))


@pytest.mark.skipif(CUDA, reason="auto is CUDA here; test_cuda_student_matches_cpu covers it")
def test_auto_on_a_cpu_machine_is_the_cpu_student_bitwise(tmp_path):
    cpu, cpu_result, cpu_answers = _trained(dataclasses.replace(MICRO, device="cpu"), tmp_path)
    auto, auto_result, auto_answers = _trained(MICRO, tmp_path / "other")
    # the same cache file name as before the device field existed: CPU caches stay valid
    assert (
        cpu.cache_path("k").name == auto.cache_path("k").name == "base-77ba82b66274727cfebb7f6b.pt"
    )
    assert auto.device == torch.device("cpu")
    assert cpu_result.losses == auto_result.losses and cpu_result.tokens == auto_result.tokens
    assert all(torch.equal(v, auto_result.state[k]) for k, v in cpu_result.state.items())
    assert cpu_answers == auto_answers


def test_packed_batches_are_the_same_tensors_as_per_step_ones():
    data = TinyStudent(MICRO)._encode_examples(EXAMPLES[:50])
    index = [slice(0, 16), slice(16, 32), torch.tensor([3, 40, 7]), slice(48, 64)]
    plain = list(_batches(data, iter(index)))
    packed = list(_packed(torch.device("cpu"), iter(_batches(data, iter(index)))))
    assert len(plain) == len(packed) == 4
    for a, b in zip(plain, packed, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a[:3], b[:3], strict=True)) and a[3] == b[3]
    assert list(_packed(torch.device("cpu"), iter([]))) == []


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA: torch sees no GPU on this machine")
def test_cuda_student_matches_cpu(tmp_path):
    # no dropout: its masks come from another generator on the GPU
    config = dataclasses.replace(MICRO, dropout=0.0)
    cpu, cpu_result, cpu_answers = _trained(dataclasses.replace(config, device="cpu"), tmp_path)
    gpu, gpu_result, gpu_answers = _trained(dataclasses.replace(config, device="cuda"), tmp_path)
    assert gpu.device.type == "cuda" and cpu.cache_path("k") != gpu.cache_path("k")
    assert all(v.device.type == "cpu" for v in gpu_result.state.values())  # pickles as on CPU
    assert all(v.device.type == "cpu" for v in gpu.base_state.values())
    assert gpu_result.steps == cpu_result.steps and gpu_result.tokens == cpu_result.tokens
    assert gpu_result.losses == pytest.approx(cpu_result.losses, rel=2e-3, abs=2e-3)
    same = sum(a == b for a, b in zip(cpu_answers, gpu_answers, strict=True))
    assert same >= 0.9 * len(cpu_answers), (same, cpu_answers, gpu_answers)
    # the GPU student answers with CPU weights too (e.g. a state from another worker)
    mixed = gpu.answer([p for p, _ in EXAMPLES[:60]], cpu_result.state)
    assert sum(a == b for a, b in zip(mixed, cpu_answers, strict=True)) >= 0.95 * len(mixed)
