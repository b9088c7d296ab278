"""Running a suite: plan (suite -> jobs), job functions, executors, training, checkpoints, the
run directory (written by the coordinator alone), the lock and the environment."""
