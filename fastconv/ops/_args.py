"""Argument normalisation shared by the functional ops (ints or tuples, as torch accepts)."""
from typing import Sequence, Tuple, Union

import torch

IntOrPair = Union[int, Sequence[int]]


def pair(value: IntOrPair, name: str, op: str) -> Tuple[int, int]:
    """``3 -> (3, 3)``, ``(3,) -> (3, 3)``, ``(2, 3) -> (2, 3)``; anything else is a TypeError
    or ValueError naming the argument."""
    if isinstance(value, torch.SymInt) or (isinstance(value, int) and not isinstance(value, bool)):
        return (value, value)
    if isinstance(value, (tuple, list, torch.Size)):
        items = tuple(value)
        if not all(isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool) for v in items):
            raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {value!r}")
        if len(items) == 1:
            return (items[0], items[0])
        if len(items) == 2:
            return items
        raise ValueError(f"{op}: {name} must be a single int or a tuple of two ints, got {value!r}")
    raise TypeError(f"{op}: {name} must be an int or a tuple of ints, got {type(value).__name__}")


def check_tensor(input, op: str, name: str = "input") -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(input).__name__}")
