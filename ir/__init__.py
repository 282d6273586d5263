"""WHAT each Hymba kernel computes, as TVM tensor IR: pure builders (static dims, dtypes) ->
PrimFunc, with a symbolic sequence length where the shape varies. No scheduling, no targets.

Every PrimFunc carries the attribute `hymba.kernel` (its family, e.g. "rmsnorm"), which
`schedules` uses to pick a rule, and a unique `global_symbol`.
"""
