"""What to measure: a case, its axes (tasks, prompts), the flag table both front ends read, input limits."""
