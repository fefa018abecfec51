"""Wire types (msgspec): the OpenAI API subset we read, routes, events and errors."""
