"""Fake upstream APIs speaking real provider wire formats over loopback HTTP, for adapter tests."""
