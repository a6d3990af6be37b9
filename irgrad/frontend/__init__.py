"""The tracing DSL: specs, pytrees, traced tensors, library functions, nn layers, optimizers."""
