"""Wire types (msgspec): the OpenAI API subset we read, routes, keys, secrets metadata, usage
events, deployment health, control-plane messages, and the masked ``Secret`` value type."""
