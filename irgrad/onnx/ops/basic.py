"""A first few compute ops (the families live in their own modules)."""

from __future__ import annotations

from ...frontend import library as L
from . import onnx_op


@onnx_op("Relu")
def relu(node):
    return L.relu(node.tensor(0))


@onnx_op("Add")
def add(node):
    return node.tensor(0) + node.tensor(1)


@onnx_op("MatMul")
def matmul(node):
    return L.matmul(node.tensor(0), node.tensor(1))
