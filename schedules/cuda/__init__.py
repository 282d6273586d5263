"""CUDA schedule rules, one module per kernel family; shared helpers in `common`. Families
without a rule here use TVM's dlight GPU rules (schedules.registry)."""
