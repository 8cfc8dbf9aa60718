"""The CPU runtime maps Megatron-Core's CUDA-only calls to CPU (run in a spawned process, since
installing the shim changes torch globally for that process)."""

from __future__ import annotations

from tower_megatron.testing import run_distributed


def _shim_checks() -> dict:
    import torch

    from tower_megatron.runtime import cpu_shim

    cpu_shim.install()
    out: dict = {}
    out["factory"] = torch.empty(3, device="cuda").device.type
    out["int_device"] = torch.zeros(2, device=torch.cuda.current_device()).device.type
    out["dot_cuda"] = torch.ones(2).cuda().device.type
    out["to_cuda"] = torch.ones(2).to("cuda").device.type
    out["type_name"] = torch.ones(2).type()
    out["generator"] = torch.Generator(device="cuda").device.type
    # The mapped constructor keeps isinstance both ways (Megatron's RNG code checks it).
    from megatron.core.tensor_parallel.random import convert_cuda_rng_state

    made = torch.Generator(device="cuda").manual_seed(3)
    out["isinstance"] = [
        isinstance(made, torch.Generator),
        isinstance(torch.default_generator, torch.Generator),
        isinstance(torch.Generator(), torch.Generator),
    ]
    out["megatron_generator_state"] = torch.equal(convert_cuda_rng_state(made), made.get_state())

    class MakesCudaInBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            # Megatron's custom functions allocate on "cuda" inside backward.
            return grad * torch.full(grad.shape, 2.0, device="cuda")

    x = torch.ones(3, requires_grad=True)
    MakesCudaInBackward.apply(x).sum().backward()
    out["backward_grad"] = x.grad.tolist()

    # The CUDA RNG is the CPU generator: Megatron's tracker forks and restores real state.
    import torch.distributed as dist
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker, model_parallel_cuda_manual_seed

    from tower_megatron.runtime import init_runtime

    init_runtime(device="cpu", seed=7)
    assert dist.is_initialized()
    model_parallel_cuda_manual_seed(7)
    before = torch.rand(2)
    torch.manual_seed(7)
    model_parallel_cuda_manual_seed(7)
    with get_cuda_rng_tracker().fork():
        forked_first = torch.rand(2)
    after = torch.rand(2)
    with get_cuda_rng_tracker().fork():
        forked_second = torch.rand(2)
    out["fork_restores_default_stream"] = torch.equal(before, after)
    out["fork_advances_its_stream"] = not torch.equal(forked_first, forked_second)
    out["stream_standins"] = [torch.cuda.current_stream().query(), torch.cuda.Event().query()]
    cpu_shim.uninstall()
    out["uninstalled"] = not cpu_shim.is_installed()
    out["generator_restored"] = torch.Generator is torch._C.Generator
    return out


def test_cpu_shim_maps_cuda_to_cpu():
    [out] = run_distributed(_shim_checks, world_size=1)
    assert out["factory"] == out["int_device"] == out["dot_cuda"] == out["to_cuda"] == "cpu"
    assert out["generator"] == "cpu"
    assert out["isinstance"] == [True, True, True]
    assert out["megatron_generator_state"]
    assert out["type_name"] == "torch.cuda.FloatTensor"
    assert out["backward_grad"] == [2.0, 2.0, 2.0]
    assert out["fork_restores_default_stream"]
    assert out["fork_advances_its_stream"]
    assert out["stream_standins"] == [True, True]
    assert out["uninstalled"]
    assert out["generator_restored"]
