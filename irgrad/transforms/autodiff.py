"""Differentiation transforms on `Function`s: grad, value_and_grad, vjp, jvp, hvp.

Each returns a new `Function` whose `.ir` is an ordinary IR function (printable,
parseable, compilable), so the transforms compose to any order. `argnums` picks
positional arguments, which may be pytrees (a params dict): an int gives a bare result,
a tuple gives a tuple.
"""

from __future__ import annotations

from ..api import as_function
from ..errors import IrgradError
from ..frontend.function import Function
from ..pytree import LEAF, TreeDef
from ..passes.forward_ad import forward_ad
from ..passes.reverse_ad import reverse_ad
from ..ir.rewrite import remove_dead_ops


def _leaf_ranges(fn: Function) -> list[range]:
    """The flat parameter indices of each positional argument."""
    out, start = [], 0
    for child in fn.in_tree.children:
        n = child.num_leaves
        out.append(range(start, start + n))
        start += n
    return out


def _select(fn: Function, argnums, what: str):
    """(flat parameter indices, tree of the selected arguments) for `argnums`: an int or a
    tuple of distinct argument positions, each in 0 .. number of arguments - 1."""
    ranges = _leaf_ranges(fn)
    single = isinstance(argnums, int) and not isinstance(argnums, bool)
    if not single and not isinstance(argnums, (tuple, list)):
        raise IrgradError(f"{what}: argnums must be an int or a tuple of ints, got {argnums!r}")
    nums = (argnums,) if single else tuple(argnums)
    if not nums:
        raise IrgradError(f"{what}: argnums is empty")
    for a in nums:
        if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(ranges):
            raise IrgradError(f"{what}: argnums {argnums!r} must name arguments of {fn.name} by "
                              f"position, 0 to {len(ranges) - 1} (negative positions are refused)")
    if len(set(nums)) != len(nums):
        raise IrgradError(f"{what}: argnums {argnums!r} names an argument twice")
    flat = [i for a in nums for i in ranges[a]]
    if not flat:
        # (the passes read an empty parameter list as "every float parameter")
        raise IrgradError(f"{what}: argnums {argnums!r} selects arguments of {fn.name} that "
                          f"hold no tensors (empty pytrees)")
    subtrees = [fn.in_tree.children[a] for a in nums]
    tree = subtrees[0] if single else TreeDef("tuple", (), tuple(subtrees))
    return flat, tree


def _tuple_tree(*children) -> TreeDef:
    return TreeDef("tuple", (), tuple(children))


def grad(f, argnums=0) -> Function:
    """d f / d args[argnums] for a function returning one float scalar."""
    fn = as_function(f)
    flat, tree = _select(fn, argnums, "grad")
    g = reverse_ad(fn.ir, flat, name=f"grad_{fn.name}")
    return Function(g, fn.in_tree, tree)


def value_and_grad(f, argnums=0, has_aux: bool = False) -> Function:
    """Returns `(value, grads)`; grads shaped like args[argnums]. With `has_aux`, f returns
    `(scalar, aux)` and the result is `((scalar, aux), grads)`, aux not differentiated
    (JAX's convention)."""
    fn = as_function(f)
    flat, tree = _select(fn, argnums, "value_and_grad")
    if has_aux and (fn.out_tree.kind != "tuple" or len(fn.out_tree.children) != 2
                    or fn.out_tree.children[0] != LEAF):
        raise IrgradError(f"value_and_grad(has_aux=True): {fn.name} must return (scalar, aux)")
    g = reverse_ad(fn.ir, flat, return_value=True, name=f"value_and_grad_{fn.name}", has_aux=has_aux)
    return Function(g, fn.in_tree, _tuple_tree(fn.out_tree if has_aux else LEAF, tree))


def vjp(f, argnums=0) -> Function:
    """`Function(*args, cotangent) -> cotangent of args[argnums]`; the cotangent is shaped
    like f's result."""
    fn = as_function(f)
    flat, tree = _select(fn, argnums, "vjp")
    g = reverse_ad(fn.ir, flat, cotangent_params=True, name=f"vjp_{fn.name}")
    in_tree = TreeDef("tuple", (), fn.in_tree.children + (fn.out_tree,))
    return Function(g, in_tree, tree)


def jvp(f, argnums=0) -> Function:
    """`Function(*args, tangent) -> (outputs, output tangents)`; the tangent is shaped like
    args[argnums]."""
    fn = as_function(f)
    flat, tree = _select(fn, argnums, "jvp")
    g = forward_ad(fn.ir, flat, name=f"jvp_{fn.name}")
    in_tree = TreeDef("tuple", (), fn.in_tree.children + (tree,))
    return Function(g, in_tree, _tuple_tree(fn.out_tree, fn.out_tree))


def hvp(f, argnums=0) -> Function:
    """`Function(*args, v) -> H v`, the Hessian of scalar f times v (forward-over-reverse)."""
    fn = as_function(f)
    flat, tree = _select(fn, argnums, "hvp")
    g = reverse_ad(fn.ir, flat, name=f"grad_{fn.name}")
    h = forward_ad(g, flat, name=f"hvp_{fn.name}")
    # forward_ad returns (gradients, their tangents): keep the tangents, H v
    n = len(flat)
    h.set_outputs(h.outputs[n:])
    remove_dead_ops(h.body)
    in_tree = TreeDef("tuple", (), fn.in_tree.children + (tree,))
    return Function(h, in_tree, tree)


def grad_all_floats(f) -> Function:
    """The gradient with respect to every float argument (for `irgrad dump --grad`)."""
    fn = as_function(f)
    ranges = _leaf_ranges(fn)
    nums = tuple(a for a, r in enumerate(ranges)
                 if all(fn.ir.params[i].dtype.is_float for i in r) and len(r))
    if not nums:
        raise IrgradError(f"{fn.name} has no float arguments to differentiate")
    return grad(fn, nums)
