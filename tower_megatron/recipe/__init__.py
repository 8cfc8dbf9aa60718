"""``tower-megatron recipe``: the Tower+ stages (preprocess → CPT → SFT → WPO → GRPO, eval after
each, Pareto report) from one file, resumable (:mod:`.runner`, :mod:`.config`, :mod:`.summary`)."""
