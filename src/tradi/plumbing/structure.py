"""Model structure: wrappers looked through, and the one naming of parameters every part shares.

Users hand tradi the model they train, which is often wrapped: `DistributedDataParallel`,
`nn.DataParallel`, `torch.compile` (an `OptimizedModule`), `torch.optim.swa_utils.AveragedModel`,
activation-checkpoint wrappers, a wrapper of their own, possibly nested, possibly around a
submodule only. The tracker, the SWAG collector, the posteriors and the ensemble all name
parameters as `named_parameters()` does on the network with every wrapper removed:

- a *wrapper* is a module with exactly one child, stored as ``.module``, ``._orig_mod`` or
  ``._checkpoint_wrapped_module``, and no parameter of its own (DDP, DataParallel,
  OptimizedModule, AveragedModel, CheckpointWrapper and any user class built the same way);
- torch's own wrappers, whose forward is their child's, are also removed where the network is
  run (`unwrap`, `evaluation_copy`): DDP's forward would run collectives, DataParallel and
  TorchScript refuse `functional_call`. A user's wrapper keeps its forward (it may add
  computation): only its attribute leaves the names;
- a tensor shared by several modules (tied weights) appears once, under the first name
  `named_parameters()` gives it, and sampled networks keep the tie
  (`torch.func.functional_call(..., tie_weights=True)` writes it under all its names).

So a tracker state or posterior made on a wrapped model serves the plain one and back.
FSDP1 (`FullyShardedDataParallel`, flat sharded parameters) and TorchScript modules cannot be
supported and raise a `TypeError` that names the fix.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torch.nn.parameter import UninitializedParameter
from torch.optim.swa_utils import AveragedModel

#: The attributes under which wrappers keep the network they wrap.
WRAPPER_ATTRIBUTES: tuple[str, ...] = ("module", "_orig_mod", "_checkpoint_wrapped_module")

#: torch's wrappers whose forward is their child's: removed where the network is run.
_TORCH_WRAPPERS = (DistributedDataParallel, DataParallel, AveragedModel)
_TORCH_WRAPPER_ATTRIBUTES = ("_orig_mod", "_checkpoint_wrapped_module")  # compile, checkpointing

NamedParameter = tuple[str, nn.Module, nn.Parameter]


def _is_fsdp1(module: nn.Module) -> bool:
    # checked through sys.modules: importing torch.distributed.fsdp costs seconds at start-up,
    # and no FSDP1 wrapper exists unless it was imported
    fsdp = sys.modules.get("torch.distributed.fsdp")
    wrapper = getattr(fsdp, "FullyShardedDataParallel", None)
    return wrapper is not None and isinstance(module, wrapper)


def is_wrapper(module: nn.Module) -> bool:
    """Whether `module` only wraps one network (see the module docstring for the rule)."""
    children = list(module._modules.items())
    return (
        len(children) == 1
        and children[0][0] in WRAPPER_ATTRIBUTES
        and children[0][1] is not None
        and not module._parameters
    )


def is_torch_wrapper(module: nn.Module) -> bool:
    """Whether `module` is one of torch's wrappers, whose forward is its child's."""
    return is_wrapper(module) and (
        isinstance(module, _TORCH_WRAPPERS)
        or next(iter(module._modules)) in _TORCH_WRAPPER_ATTRIBUTES
    )


def unwrap(model: nn.Module, *, names_only: bool = False) -> nn.Module:
    """The network inside torch's wrappers around `model` (nested ones too); `model` if none.

    With ``names_only`` every wrapper is removed, users' ones too: the module whose parameter
    names tradi uses (its forward may differ from `model`'s; never run it for `model`).

    Raises:
        TypeError: `model` is an FSDP1 `FullyShardedDataParallel`, whose flat sharded
            parameters have no per-weight names: shard with FSDP2 (`fully_shard`) instead.
    """
    while True:
        if _is_fsdp1(model):
            raise TypeError(
                "FullyShardedDataParallel (FSDP1) flattens and shards the parameters, so tradi "
                "cannot name or sample them: shard with FSDP2 (torch.distributed.fsdp."
                "fully_shard), which tradi supports, or use DistributedDataParallel"
            )
        if not (is_wrapper(model) if names_only else is_torch_wrapper(model)):
            return model
        model = next(iter(model._modules.values()))  # type: ignore[assignment]


def named_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """`named_modules()` of the network with every wrapper removed (inner ones too).

    Pre-order, each module once (a shared module under its first name), wrappers skipped.
    """
    seen: set[int] = set()

    def visit(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        module = unwrap(module, names_only=True)
        if id(module) in seen:
            return
        seen.add(id(module))
        yield prefix, module
        for name, child in module._modules.items():
            if child is not None:
                yield from visit(f"{prefix}.{name}" if prefix else name, child)

    yield from visit("", model)


def named_parameters_with_owner(model: nn.Module) -> list[NamedParameter]:
    """Every distinct parameter of `model` once: (name, the module holding it, parameter).

    Names and order are those of `named_parameters()` on the network with every wrapper
    removed, inner ones too; a tied tensor is listed once, under its first name, with its first
    owner.

    Raises:
        ValueError: a parameter is still uninitialised (a lazy layer such as `nn.LazyLinear`
            before its first forward pass).
    """
    seen: set[int] = set()
    named = []
    for module_name, module in named_modules(model):
        for param_name, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(param, UninitializedParameter):
                raise ValueError(
                    f"parameter {name!r} of {type(module).__name__} is not initialised yet (a "
                    "lazy layer): run one forward pass on a batch before tracking, collecting "
                    "or sampling the weights"
                )
            named.append((name, module, param))
    return named


def has_uninitialised_parameters(model: nn.Module) -> bool:
    """Whether a lazy layer of `model` still waits for its first forward pass."""
    return any(isinstance(p, UninitializedParameter) for p in model.parameters())


def evaluation_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with torch's wrappers (outer and inner) replaced by what they wrap.

    `functional_call` can evaluate it; its `named_parameters()` match
    `named_parameters_with_owner` one to one, in order (they differ only where a user's wrapper
    adds its attribute). torch's wrappers are never copied (DDP cannot be); ties survive.

    Raises:
        TypeError: `model` is (or contains) a TorchScript module, which
            `torch.func.functional_call` cannot evaluate with other weights; or an FSDP1 wrapper.
    """
    root = unwrap(model)
    memo: dict[int, object] = {}
    for module in _post_order(root):
        if _is_script(module):
            raise TypeError(
                f"{type(module).__name__} is a TorchScript module: torch.func.functional_call "
                "cannot evaluate it with sampled weights; pass the nn.Module before "
                "torch.jit.script/trace (the tracker itself works on either)"
            )
        if is_torch_wrapper(module) or _is_fsdp1(module):
            memo[id(module)] = copy.deepcopy(unwrap(module), memo)
    return copy.deepcopy(root, memo)


def own_names(copy: nn.Module) -> dict[str, str]:
    """tradi's parameter names (`named_parameters_with_owner`: the tracker's and posteriors')
    -> the names ``copy.named_parameters()`` gives them, which keep a user wrapper's prefix;
    ``copy`` is an `evaluation_copy`."""
    own = [name for name, _ in copy.named_parameters()]
    return {
        name: own_name
        for (name, _, _), own_name in zip(named_parameters_with_owner(copy), own, strict=True)
    }


def _is_script(module: nn.Module) -> bool:
    jit = sys.modules.get("torch.jit")
    return jit is not None and isinstance(module, jit.ScriptModule)


def _post_order(model: nn.Module) -> Iterator[nn.Module]:
    """Every module under `model`, wrappers included, children before their parent."""
    seen: set[int] = set()

    def visit(module: nn.Module) -> Iterator[nn.Module]:
        if id(module) in seen:
            return
        seen.add(id(module))
        for child in module._modules.values():
            if child is not None:
                yield from visit(child)
        yield module

    yield from visit(model)
