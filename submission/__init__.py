"""Build and check code-execution submissions for the "Where's Whale-do?" runtime."""
