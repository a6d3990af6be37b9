"""The IR layer: types, values, ops, functions, the op registry, printer, parser,
verifier and the reference interpreter. Nothing here imports the layers above."""

from .builder import Builder
from .core import Block, Function, Module, Operation, Value, clone_function, compute_uses
from .interpreter import check_arguments, run_block, run_function
from .parser import parse, parse_function
from .printer import print_function, print_module
from .registry import OpDef, all_ops, get_op
from .types import DType, TensorType
from .verifier import verify, verify_function, verify_module

__all__ = [
    "Builder", "Block", "Function", "Module", "Operation", "Value", "clone_function",
    "compute_uses", "check_arguments", "run_block", "run_function", "parse", "parse_function",
    "print_function", "print_module", "OpDef", "all_ops", "get_op", "DType", "TensorType",
    "verify", "verify_function", "verify_module",
]
