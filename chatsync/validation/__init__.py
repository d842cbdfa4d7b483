"""Validation of the chat side with Great Expectations, the suite generated from the rules."""
