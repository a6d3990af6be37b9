"""The CPU backend: LLVM IR through llvmlite."""
