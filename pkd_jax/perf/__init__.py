"""Performance measurement: train-step timing and MFU (`train_step`), input-pipeline and preprocessing
throughput (`data_bench`), parameter and MAC counts (`complexity`), device peaks (`peak`) and profiler
summaries (`profile_summary`). The command line is `python -m pkd_jax.bench`."""
