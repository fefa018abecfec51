"""Provider adapters: a direct OpenAI-compatible path, litellm for the rest, and the offline demo."""
