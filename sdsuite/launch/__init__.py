"""Scale-out: one process per GPU on this node (``--gpus``) and job arrays on SLURM through submitit.

The sweep engine (sdsuite.dvfs.sweep_engine) stays the only thing that measures: a launcher asks it for the plan,
splits the points still to run into tasks (sdsuite.launch.shards), and runs each task as an ordinary
``sdsuite sweep`` restricted to its points, with its own GPU, its own clock session and its own
results directory under ``OUT/tasks/``; finished tasks are merged into ``OUT/results.jsonl``
without duplicates (sdsuite.launch.merge).
"""
