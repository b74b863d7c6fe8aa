"""Retention after a case closes, legal holds, and the purge of expired ciphertext."""
