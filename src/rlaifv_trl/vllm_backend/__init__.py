"""The vLLM backend of the feedback stages: an engine in its own process (`vllm_engine`, driving `vllm_worker`), the
sampler, splitter and labeler jobs on it (`vllm_feedback`), and checkpoint conversion for vLLM's loader
(`vllm_checkpoint`). `rlaifv_trl.feedback.backend_factory` chooses between it and transformers for each role. The
modules keep their `vllm_` prefix: the worker runs as a script, with this folder first on its `sys.path`."""
