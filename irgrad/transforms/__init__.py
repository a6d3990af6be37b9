"""Transforms of traced Functions: autodiff (grad, jvp, vjp, hvp), training steps, check_grads."""
