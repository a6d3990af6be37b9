"""irgrad: a deep-learning compiler you can see into.

Python model code is traced into a typed SSA IR; passes differentiate, simplify, fuse and
memory-plan it; codegen turns it into native code. See DESIGN.md for the public contract.
"""

from .errors import (ArgumentError, BackendUnavailable, GradientCheckError, IrgradError,
                     OnnxError, ParseError, PipelineError, ShapeError, SourceLoc, TraceError,
                     UnsupportedOnnxError, VerifyError)
from .frontend.function import Function, function, trace
from .frontend.library import (abs, arange, argmax, argmin, astype, ceil, clip, concatenate, cos,
                               cross_entropy, cumsum, elu, erf, exp, expm1, floor, full, gelu,
                               layer_norm, leaky_relu, log, log1p, log_softmax, logical_and,
                               logical_not, logical_or, logical_xor, logsumexp, matmul, max,
                               maximum, mean, min, minimum, mse_loss, one_hot, ones, pad,
                               primitive, relu, reshape, round, sigmoid, sign, silu, sin,
                               softmax, softplus, sqrt, square, stack, stop_gradient, sum, take,
                               tanh, transpose, var, where, zeros)
from .frontend.einsum import einsum
from .frontend.conv import avg_pool2d, conv1d, conv2d, conv_transpose2d, max_pool2d
from .pytree import tree_map
from .frontend.specs import TensorSpec, bool_, f32, f64, i32, i64
from .frontend.tensor import Tensor
from .ir import Module, parse, verify
from .ir.types import DType, TensorType
from .api import compile
from .transforms.autodiff import grad, hvp, jvp, value_and_grad, vjp
from .transforms.gradcheck import check_grads
from .frontend import nn, optim, random
from . import onnx
from .transforms.training import compile_step, training_step
from .passes.manager import run_pipeline

__version__ = "0.1.0"

__all__ = [
    "ArgumentError", "BackendUnavailable", "GradientCheckError", "IrgradError", "OnnxError",
    "UnsupportedOnnxError", "ParseError",
    "PipelineError", "ShapeError", "SourceLoc", "TraceError", "VerifyError", "Function", "function", "trace",
    "argmax", "argmin", "ceil", "clip", "cumsum", "einsum", "elu", "erf", "expm1", "floor",
    "leaky_relu", "log1p", "logical_and", "logical_not", "logical_or", "logical_xor", "min",
    "round", "silu", "softplus", "avg_pool2d", "conv1d", "conv2d", "conv_transpose2d", "max_pool2d",
    "random", "onnx",
    "abs", "arange", "astype", "concatenate", "cos", "cross_entropy", "exp", "full", "gelu",
    "layer_norm", "log", "log_softmax", "logsumexp", "matmul", "max", "maximum", "mean",
    "minimum", "mse_loss", "one_hot", "ones", "pad", "primitive", "relu", "reshape", "sigmoid", "sign", "sin",
    "softmax", "sqrt", "square", "stack", "stop_gradient", "sum", "take", "tanh", "transpose",
    "var", "where", "zeros", "tree_map", "TensorSpec", "bool_", "f32", "f64", "i32", "i64",
    "Tensor", "Module", "parse", "verify", "DType", "TensorType", "compile", "run_pipeline", "grad", "hvp", "jvp", "value_and_grad", "vjp", "check_grads", "nn", "optim", "compile_step", "training_step",
]
