"""`python -m hymba_compile explore`: schedule variants and knobs per kernel (kernel scope) and
whole-program fusion variants (model scope), verified against the eager reference, then timed;
the best per family is recorded as the target's choices (hymba_compile/choices.py)."""
