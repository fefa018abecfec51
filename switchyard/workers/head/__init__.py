"""The head worker: authorise, route, enqueue."""
