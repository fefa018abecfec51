"""The batch runner: OpenAI Batch API jobs, line by line, at batch priority."""
