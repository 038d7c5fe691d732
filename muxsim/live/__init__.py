"""The live backend: the engine interface (:mod:`.engine`), process-per-LLM engines
(:mod:`.workers`, :mod:`.transformers`, :mod:`.vllm`), the live driver, calibration sweeps and
machine-speed probes."""
