"""What is kept on disk: result records (append-only, atomic) and sampled images."""
