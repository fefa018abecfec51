"""The OpenAI-compatible HTTP edges: tail (thin) and gateway (plus management), one core."""
