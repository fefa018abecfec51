"""Provider adapters: a direct OpenAI-compatible path, litellm for the rest, the offline demo."""
