"""CPU (LLVM) schedule rules, one module per kernel family."""
