"""Evaluation: ``tower-megatron eval`` (suites in :mod:`.suites`, test-set readers in
:mod:`.testsets`, sacrebleu metrics in :mod:`.translation`, IFEval in :mod:`.ifeval`, IF-MT
constraints in :mod:`.ifmt`, LLM judge in :mod:`.judge`, the run in :mod:`.runner`),
``tower-megatron serve`` (:mod:`.serve`) and ``tower-megatron report`` (:mod:`.report`)."""

from tower_megatron.eval.report import write_pareto_report

__all__ = ["write_pareto_report"]
